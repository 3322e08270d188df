"""One Redis client for a URL, shared by the processes: a cluster client when the node says
it is in a cluster.

`REDIS_URL` names one server or one node of a Redis Cluster (CONTRACT §4). The node's
`INFO cluster` tells which: a plain client would answer MOVED for two keys in three on a
cluster, a cluster client refuses a server that is not one. Like `contracts.publisher`, this
module does I/O (with the redis client) and is imported only by the processes that need it.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

AnyRedis = Redis | RedisCluster


async def connect_redis(url: str, **options: Any) -> AnyRedis:
    """A connected client for `url`; `options` (timeouts, retry, pool size) go to either kind.

    Raises the client's error when the node does not answer; nothing stays open then.
    """
    probe = Redis.from_url(url, **options)
    try:
        info = await probe.info("cluster")
    except BaseException:
        await probe.aclose()
        raise
    if info.get("cluster_enabled") != 1:
        return probe
    await probe.aclose()
    cluster = RedisCluster.from_url(url, **options)
    try:
        await cluster.initialize()
    except BaseException:
        await cluster.aclose()
        raise
    return cluster

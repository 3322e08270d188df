"""One Redis client for a URL: a cluster client when the node says it is in a cluster."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

# A frozen or unreachable server must surface as an error within seconds, so that the
# consumer rewinds and retries instead of hanging on a socket.
SOCKET_TIMEOUT_SECONDS = 5.0


async def connect_redis(url: str) -> Redis | RedisCluster:
    probe = Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=SOCKET_TIMEOUT_SECONDS
    )
    info = await probe.info("cluster")
    if info.get("cluster_enabled") == 1:
        await probe.aclose()
        cluster = RedisCluster.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        )
        await cluster.initialize()
        return cluster
    return probe

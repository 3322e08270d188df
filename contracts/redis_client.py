"""One Redis client for a URL, shared by the processes: a cluster client when the node says
it is in a cluster.

`REDIS_URL` names one server or one node of a Redis Cluster (CONTRACT §4). The node's
`INFO cluster` tells which: a plain client would answer MOVED for two keys in three on a
cluster, a cluster client refuses a server that is not one. Like `contracts.publisher`, this
module does I/O (with the redis client) and is imported only by the processes that need it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AuthenticationError, AuthorizationError, ResponseError

AnyRedis = Redis | RedisCluster
# Replies of a server that refuses the client's credentials or rights.
_REFUSALS = ("NOAUTH", "WRONGPASS", "NOPERM", "invalid username-password")


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


@dataclass(frozen=True, slots=True)
class RedisProblem:
    """Why `REDIS_URL` cannot be used now. `refused`: the server answered and refused us (our
    credentials, our TLS) - a setting to fix, not a server to wait for."""

    refused: bool
    reason: str


async def redis_problem(url: str, timeout: float) -> RedisProblem | None:
    """None when the server at `url` answers a PING as the URL's credentials and TLS say."""
    client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        await client.ping()
    except Exception as error:  # every kind is a reason to report
        return _problem(error)
    finally:
        await client.aclose()
    return None


def _problem(error: BaseException) -> RedisProblem:
    chain = [error]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 5:
        chain.append(cause)
    for each in chain:
        if isinstance(each, ssl.SSLCertVerificationError):
            return RedisProblem(
                True, f"TLS: the server's certificate is not trusted ({each.verify_message})"
            )
        if isinstance(each, ssl.SSLError):
            return RedisProblem(True, f"TLS: {each.reason or each}")
        if isinstance(each, AuthenticationError | AuthorizationError) or (
            isinstance(each, ResponseError) and str(each).startswith(_REFUSALS)
        ):
            return RedisProblem(True, f"refused: {str(each).splitlines()[0]}")
    return RedisProblem(
        False, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    )

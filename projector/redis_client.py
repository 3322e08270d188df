"""The projector's Redis client: a cluster client when the node says it is in a cluster
(the detection is `contracts.redis_client`, shared with the api)."""

from __future__ import annotations

from contracts.redis_client import AnyRedis
from contracts.redis_client import connect_redis as connect

# A frozen or unreachable server must surface as an error within seconds, so that the
# consumer rewinds and retries instead of hanging on a socket.
SOCKET_TIMEOUT_SECONDS = 5.0


async def connect_redis(url: str) -> AnyRedis:
    return await connect(
        url, socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=SOCKET_TIMEOUT_SECONDS
    )

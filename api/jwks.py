"""The signing keys an identity provider publishes (`JWT_JWKS_URL`, RFC 7517), by `kid`.

Managed identity providers (Auth0, Cognito, Keycloak, Entra) rotate their keys: a new `kid`
appears in the key set before tokens signed with it do. So the set is fetched at the first
token, kept for `MAX_AGE_SECONDS`, and fetched again when a token names a `kid` it does not
hold - at most once per `UNKNOWN_KID_SECONDS`, so that tokens with made-up kids cannot make us
hammer the provider. Fetching runs in a thread (urllib blocks) and is shared by the requests
that wait for it; a failed fetch keeps the keys held so far.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import jwt

log = logging.getLogger("api.jwks")

UNKNOWN_KID_SECONDS = 30.0
MAX_AGE_SECONDS = 300.0
FETCH_TIMEOUT_SECONDS = 5.0


def fetch_key_set(url: str) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of the set at `url`, by kid (blocking)."""
    client = jwt.PyJWKClient(
        url, cache_keys=False, cache_jwk_set=False, timeout=FETCH_TIMEOUT_SECONDS
    )
    return {key.key_id: key for key in client.get_signing_keys() if key.key_id}


class JwksKeys:
    def __init__(
        self,
        url: str,
        fetch: Callable[[str], dict[str, jwt.PyJWK]] = fetch_key_set,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._fetch = fetch
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # of the last attempt, successful or not
        self._fetching: asyncio.Task[None] | None = None

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The key named `kid`; None when the provider does not publish it."""
        age = math.inf if self._fetched_at is None else self._clock() - self._fetched_at
        if age >= MAX_AGE_SECONDS or (kid not in self._keys and age >= UNKNOWN_KID_SECONDS):
            await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        if self._fetching is None:
            self._fetching = asyncio.create_task(self._fetch_now())
        await asyncio.shield(self._fetching)

    async def _fetch_now(self) -> None:
        try:
            self._keys = await asyncio.to_thread(self._fetch, self.url)
        except Exception as error:  # the provider away: keep what we hold
            log.warning("JWT_JWKS_URL: key set not fetched (%s)", _reason(error))
        finally:
            self._fetched_at = self._clock()
            self._fetching = None


def _reason(error: Any) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:300]

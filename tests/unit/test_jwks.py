"""Keys from an identity provider's JWKS: by kid, cached, refetched on an unknown kid at most
once per 30 s, kept when the provider is away."""

from __future__ import annotations

import asyncio

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from api.jwks import UNKNOWN_KID_SECONDS, JwksKeys


def jwk(kid: str) -> jwt.PyJWK:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    data = jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True) | {"kid": kid, "use": "sig"}
    return jwt.PyJWK(data)


class Provider:
    def __init__(self, *kids: str) -> None:
        self.keys = {kid: jwk(kid) for kid in kids}
        self.fetches = 0
        self.down = False

    def fetch(self, url: str) -> dict[str, jwt.PyJWK]:
        self.fetches += 1
        if self.down:
            raise OSError("connection refused")
        return dict(self.keys)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_rotated_key_is_fetched_on_its_first_token_and_unknown_kids_are_rate_limited() -> (
    None
):
    provider, clock = Provider("k1"), Clock()
    keys = JwksKeys("https://idp/jwks", provider.fetch, clock)
    assert (await keys.key("k1")) is not None
    assert provider.fetches == 1
    provider.keys["k2"] = jwk("k2")  # the provider rotates
    assert await keys.key("k2") is None, "fetched less than 30 s ago: not again"
    assert provider.fetches == 1
    clock.now += UNKNOWN_KID_SECONDS
    assert await keys.key("k2") is not None
    assert provider.fetches == 2
    for _ in range(10):
        assert await keys.key("made-up") is None
    assert provider.fetches == 2, "made-up kids do not hammer the provider"


async def test_concurrent_tokens_share_one_fetch() -> None:
    provider = Provider("k1")
    keys = JwksKeys("https://idp/jwks", provider.fetch)
    found = await asyncio.gather(*(keys.key("k1") for _ in range(50)))
    assert all(key is not None for key in found)
    assert provider.fetches == 1


async def test_keys_held_survive_a_provider_that_is_away() -> None:
    provider, clock = Provider("k1"), Clock()
    keys = JwksKeys("https://idp/jwks", provider.fetch, clock)
    assert await keys.key("k1") is not None
    provider.down = True
    clock.now += 10_000  # stale: fetched again, which fails
    assert await keys.key("k1") is not None
    assert provider.fetches == 2


@pytest.mark.parametrize("kid", ["k1", "k2"])
async def test_a_provider_away_from_the_start_gives_no_key(kid: str) -> None:
    provider = Provider("k1")
    provider.down = True
    assert await JwksKeys("https://idp/jwks", provider.fetch).key(kid) is None

"""Bearer JWT -> tenant (CONTRACT §3).

One family of keys, so that a token cannot pick its own verification: HS256 with
`JWT_SECRET`, or RS256 / ES256 with public keys - the PEM in `JWT_PUBLIC_KEY` and/or the keys
an identity provider publishes at `JWT_JWKS_URL` (`api.jwks`), chosen by the token's `kid`.
The algorithm follows the key's type, never the token's word alone: no `none`, no HS256 signed
with a public key, no RS256 token verified with an EC key. `exp` is required; `exp`, `nbf` and
`iat` are checked with `JWT_LEEWAY_SECONDS` of leeway for the clocks of the identity provider
and ours. Verified claims are cached per token until `min(exp, now + 60 s)`. Any failure -
a bad token, an unknown key, an identity provider that does not answer - is a 401.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cachetools import FIFOCache
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from api.jwks import JwksKeys
from api.settings import ApiSettings
from contracts.events import TENANT_PATTERN

MAX_TOKEN_CHARS = 8192
CACHE_SECONDS = 60.0
CACHE_ENTRIES = 10_000

_TENANT = re.compile(TENANT_PATTERN)
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class Unauthenticated(Exception):
    """A request without a valid token; `token_given` picks the WWW-Authenticate form."""

    def __init__(self, message: str, *, token_given: bool) -> None:
        super().__init__(message)
        self.message = message
        self.token_given = token_given


@dataclass(frozen=True, slots=True)
class JwtConfig:
    secret: str | None  # HS256; or else public keys below
    public_key: PublicKey | None
    jwks: JwksKeys | None
    audience: str | None
    issuer: str | None
    tenant_claim: str
    leeway_seconds: int = 30


def algorithm_of(key: Any) -> str | None:
    """The one algorithm a public key verifies: RS256 for RSA, ES256 for EC P-256."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    return None


def load_public_key(pem: str) -> PublicKey:
    key = load_pem_public_key(pem.encode())
    if algorithm_of(key) is None:
        raise ValueError("JWT_PUBLIC_KEY must be an RSA key or an EC key on P-256, in PEM")
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key


def jwt_config(settings: ApiSettings) -> JwtConfig:
    secret = settings.jwt_secret
    return JwtConfig(
        secret=None if secret is None else secret.get_secret_value(),
        public_key=None
        if settings.jwt_public_key is None
        else load_public_key(settings.jwt_public_key),
        jwks=None if settings.jwt_jwks_url is None else JwksKeys(settings.jwt_jwks_url),
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        tenant_claim=settings.jwt_tenant_claim,
        leeway_seconds=settings.jwt_leeway_seconds,
    )


class TokenVerifier:
    def __init__(self, config: JwtConfig) -> None:
        self._config = config
        # token -> (tenant, until when it may be trusted without verifying it again); FIFO
        # with the expiry checked here: a read looks up one entry, cheaper than a TTL cache's
        # bookkeeping on every request.
        self._cache: FIFOCache[str, tuple[str, float]] = FIFOCache(maxsize=CACHE_ENTRIES)

    async def tenant_of(self, authorization: str | None) -> str:
        """The tenant of a valid `Authorization: Bearer <jwt>` header; else Unauthenticated."""
        if not authorization:
            raise Unauthenticated("A bearer token is required.", token_given=False)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(
                "Use the Bearer scheme: Authorization: Bearer <token>.", token_given=False
            )
        cached = self._cache.get(token)
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("The token is too long.", token_given=True)
        key, algorithm = await self._key_for(token)
        tenant, exp = self._verify(token, key, algorithm)
        self._cache[token] = (tenant, min(exp, time.time() + CACHE_SECONDS))
        return tenant

    async def _key_for(self, token: str) -> tuple[Any, str]:
        config = self._config
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("The token is not valid.", token_given=True) from None
        if config.secret is not None:
            return config.secret, "HS256"
        kid = header.get("kid")
        key: Any = None
        if isinstance(kid, str) and config.jwks is not None:
            found = await config.jwks.key(kid)
            key = None if found is None else found.key
        elif config.public_key is not None:
            key = config.public_key
        algorithm = algorithm_of(key)
        if algorithm is None:
            raise Unauthenticated("The token's signing key is not known.", token_given=True)
        return key, algorithm

    def _verify(self, token: str, key: Any, algorithm: str) -> tuple[str, float]:
        config = self._config
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options={
                    "require": ["exp"],
                    "verify_aud": config.audience is not None,
                    "verify_iss": config.issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("The token has expired.", token_given=True) from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("The token is not valid yet.", token_given=True) from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("The token is not valid.", token_given=True) from None
        tenant = claims.get(config.tenant_claim)
        if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
            raise Unauthenticated("The token names no tenant.", token_given=True)
        return tenant, _seconds(claims["exp"]) + config.leeway_seconds


def _seconds(exp: Any) -> float:
    """`exp` as PyJWT accepted it (anything `int()` takes: an integer of any size, a numeric
    string). An integer beyond a double, e.g. 10**400, is later than any time: never an error."""
    try:
        return float(exp)
    except OverflowError:
        return math.inf

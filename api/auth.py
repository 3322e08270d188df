"""Bearer JWT -> tenant (CONTRACT §3).

One key, one algorithm family: HS256 with `JWT_SECRET`, or RS256 / ES256 with the PEM in
`JWT_PUBLIC_KEY` (the algorithm follows the key's type), so a token cannot pick its own
verification (no `none`, no HS256 signed with a public key). `exp` is required. Verified
claims are cached per token until `min(exp, now + 60 s)`, in a bounded map.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cachetools import TLRUCache
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from contracts.events import TENANT_PATTERN

MAX_TOKEN_CHARS = 8192
CACHE_SECONDS = 60.0
CACHE_ENTRIES = 10_000

_TENANT = re.compile(TENANT_PATTERN)


class Unauthenticated(Exception):
    """A request without a valid token; `token_given` picks the WWW-Authenticate form."""

    def __init__(self, message: str, *, token_given: bool) -> None:
        super().__init__(message)
        self.message = message
        self.token_given = token_given


@dataclass(frozen=True, slots=True)
class JwtConfig:
    key: str | bytes | rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    algorithms: tuple[str, ...]
    audience: str | None
    issuer: str | None
    tenant_claim: str


def jwt_config(
    secret: str | None,
    public_key_pem: str | None,
    audience: str | None,
    issuer: str | None,
    tenant_claim: str,
) -> JwtConfig:
    if secret is not None:
        return JwtConfig(secret, ("HS256",), audience, issuer, tenant_claim)
    if public_key_pem is None:
        raise ValueError("JWT_SECRET or JWT_PUBLIC_KEY is required")
    key = load_pem_public_key(public_key_pem.encode())
    if isinstance(key, rsa.RSAPublicKey):
        return JwtConfig(key, ("RS256",), audience, issuer, tenant_claim)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("JWT_PUBLIC_KEY: an EC key must be on P-256 (ES256)")
        return JwtConfig(key, ("ES256",), audience, issuer, tenant_claim)
    raise ValueError("JWT_PUBLIC_KEY must be an RSA or EC public key in PEM")


class TokenVerifier:
    def __init__(self, config: JwtConfig) -> None:
        self._config = config
        # token -> (tenant, until when it may be trusted without verifying it again)
        self._cache: TLRUCache[str, tuple[str, float]] = TLRUCache(
            maxsize=CACHE_ENTRIES, ttu=lambda _token, entry, _now: entry[1], timer=time.time
        )

    def tenant_of(self, authorization: str | None) -> str:
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
        if cached is not None:
            return cached[0]
        tenant, exp = self._verify(token)
        self._cache[token] = (tenant, min(exp, time.time() + CACHE_SECONDS))
        return tenant

    def _verify(self, token: str) -> tuple[str, float]:
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("The token is too long.", token_given=True)
        config = self._config
        try:
            claims = jwt.decode(
                token,
                key=config.key,
                algorithms=list(config.algorithms),
                audience=config.audience,
                issuer=config.issuer,
                options={
                    "require": ["exp"],
                    "verify_aud": config.audience is not None,
                    "verify_iss": config.issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("The token has expired.", token_given=True) from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("The token is not valid.", token_given=True) from None
        tenant = claims.get(config.tenant_claim)
        if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
            raise Unauthenticated("The token names no tenant.", token_given=True)
        return tenant, _seconds(claims["exp"])


def _seconds(exp: Any) -> float:
    """`exp` as PyJWT accepted it (anything `int()` takes: an integer of any size, a numeric
    string). An integer beyond a double, e.g. 10**400, is later than any time: never an error."""
    try:
        return float(exp)
    except OverflowError:
        return math.inf

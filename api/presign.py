"""Presigned S3 GET URLs (SigV4 query-string auth), signed locally.

The read route presigns a few URLs per request. botocore's `generate_presigned_url` builds a
whole request, runs its event hooks and endpoint rules and re-derives the signing key for every
URL; this module does only the SigV4 arithmetic and caches everything that does not depend on
the key. Its output is byte-identical to botocore's (s3v4, path-style against an endpoint URL,
virtual-host style on AWS); `tests/unit/test_presign.py` holds it to that.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Final, Protocol
from urllib.parse import quote, urlsplit

import boto3
from botocore.credentials import Credentials as BotocoreCredentials
from cachetools import LRUCache

MAX_EXPIRES_SECONDS: Final = 604_800  # SigV4 presigned URLs live at most 7 days.
_SERVICE: Final = "s3"
_SIGNED_HEADERS: Final = "&X-Amz-SignedHeaders=host"
# Re-read botocore credentials this long before they expire: it is botocore's default advisory
# refresh window, so reading them inside it is what makes botocore fetch new ones.
_REFRESH_MARGIN_SECONDS: Final = 15 * 60
_RETRY_SECONDS: Final = 30.0
log = logging.getLogger("api.presign")


# --- credentials ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SigningCredentials:
    """One consistent set of keys. A fixed set is its own `CredentialSource`."""

    access_key: str
    secret_key: str
    token: str | None = None
    expires_at: datetime | None = None  # aware; None for long-term keys

    def current(self) -> SigningCredentials:
        return self


class CredentialSource(Protocol):
    def current(self) -> SigningCredentials:
        """The credentials to sign with now; called once per URL, so it must be cheap."""
        ...


class BotocoreCredentialSource:
    """Serves a snapshot of boto3/botocore credentials and re-reads them only near expiry.

    `RefreshableCredentials.get_frozen_credentials()` costs ~10 µs (it checks the expiry
    against a tzlocal clock on every call) - more than the rest of a signature - so the hot
    path compares one float instead. Re-reading may refresh them, which calls STS or the
    instance metadata service and can take seconds: it runs on a thread of its own, and the
    snapshot in hand keeps serving until the new one is there. Only the first read, at start,
    is made in line.
    """

    def __init__(
        self, credentials: BotocoreCredentials, clock: Callable[[], float] = time.time
    ) -> None:
        self._credentials = credentials
        self._clock = clock
        # (snapshot, when to re-read it): one attribute, so threads never see half an update.
        self._state = self._read()
        self._refreshing = threading.Lock()

    def current(self) -> SigningCredentials:
        snapshot, recheck_at = self._state
        if self._clock() >= recheck_at and self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh, name="credentials-refresh", daemon=True).start()
        return snapshot

    def _refresh(self) -> None:
        try:
            self._state = self._read()
        except Exception as error:  # STS or IMDS away: keep serving, try again shortly
            log.warning("presigning credentials not refreshed (%s)", type(error).__name__)
            self._state = (self._state[0], self._clock() + _RETRY_SECONDS)
        finally:
            self._refreshing.release()

    def _read(self) -> tuple[SigningCredentials, float]:
        source = self._credentials
        source.get_frozen_credentials()  # lets botocore refresh first if it is due
        # A refresh on another thread swaps the keys, then the expiry. Reading the expiry on
        # both sides of the keys and keeping the earlier one never pairs keys with a later
        # expiry than theirs.
        before = _expiry_of(source)
        frozen = source.get_frozen_credentials()
        expires_at = min((e for e in (before, _expiry_of(source)) if e), default=None)
        if frozen.access_key is None or frozen.secret_key is None:
            raise ValueError("boto3 credentials resolved without an access key or secret key")
        snapshot = SigningCredentials(
            frozen.access_key, frozen.secret_key, frozen.token, expires_at
        )
        if expires_at is None:
            return snapshot, math.inf
        return snapshot, expires_at.timestamp() - _REFRESH_MARGIN_SECONDS


def _expiry_of(credentials: BotocoreCredentials) -> datetime | None:
    # Only RefreshableCredentials expire; botocore keeps the time in a private attribute.
    expiry = getattr(credentials, "_expiry_time", None)
    return expiry if isinstance(expiry, datetime) else None


# --- SigV4 pieces --------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def derive_signing_key(secret_key: str, datestamp: str, region: str, service: str) -> bytes:
    """kSigning of SigV4: four chained HMACs that only change with the day and the scope."""
    key = f"AWS4{secret_key}".encode()
    for part in (datestamp, region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def _encode_value(value: str) -> str:
    """A query-string value as botocore writes it (only unreserved characters stay)."""
    return quote(value, safe="-_.~")


_UNRESERVED_OR_SLASH: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~/"
_BYTE_IN_PATH: Final = tuple(
    chr(b) if b in _UNRESERVED_OR_SLASH else f"%{b:02X}" for b in range(256)
)


def encode_key(key: str) -> str:
    """An object key in a URL path: per UTF-8 byte, unreserved and `/` stay, the rest is %XX.

    Same as `quote(key, safe="/~")`, 2-4x faster: most keys need no escaping at all, and a
    lookup table beats urllib's per-call quoter for the rest.
    """
    raw = key.encode()
    if not raw.translate(None, _UNRESERVED_OR_SLASH):
        return key
    return "".join([_BYTE_IN_PATH[b] for b in raw])


@dataclass(frozen=True, slots=True)
class _Stamp:
    """Everything about a signature that depends only on the credentials and the signing time.

    The route signs every URL of a job's time bucket with the same `signed_at` (the bucket's
    start, offset per job), so this is built once per signing time and kept, instead of once
    per URL (strftime alone costs ~3 µs).
    """

    credentials: SigningCredentials
    signed_at: datetime
    signing_key: bytes
    query_head: str  # up to and including "X-Amz-Expires="
    token_param: str  # "&X-Amz-Security-Token=..." or ""
    string_to_sign_head: str  # everything before the canonical request's hash
    max_expires: int

    @classmethod
    def build(cls, credentials: SigningCredentials, signed_at: datetime, region: str) -> _Stamp:
        if signed_at.utcoffset() is None:
            raise ValueError("signed_at must be a timezone-aware datetime")
        amz_date = signed_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        scope = f"{amz_date[:8]}/{region}/{_SERVICE}/aws4_request"
        credential = _encode_value(f"{credentials.access_key}/{scope}")
        token = credentials.token
        return cls(
            credentials=credentials,
            signed_at=signed_at,
            signing_key=derive_signing_key(credentials.secret_key, amz_date[:8], region, _SERVICE),
            query_head=(
                f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={credential}"
                f"&X-Amz-Date={amz_date}&X-Amz-Expires="
            ),
            token_param="" if token is None else f"&X-Amz-Security-Token={_encode_value(token)}",
            string_to_sign_head=f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n",
            max_expires=_max_expires(credentials.expires_at, signed_at),
        )


def _max_expires(credentials_expire_at: datetime | None, signed_at: datetime) -> int:
    # A URL stops working when the credentials that signed it expire; say so in the URL.
    if credentials_expire_at is None:
        return MAX_EXPIRES_SECONDS
    remaining = (credentials_expire_at - signed_at) // timedelta(seconds=1)
    return min(MAX_EXPIRES_SECONDS, remaining)


# --- where a bucket lives ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    origin: str  # scheme://authority as written in the URL
    host: str  # the signed Host header: lowercase, without a default port
    path_prefix: str  # the path before the encoded key, ending in "/"


_BUCKET_NAME: Final = re.compile(r"[a-zA-Z0-9.\-_]{1,255}")  # botocore's check, minus ARNs
# botocore's test for a bucket that can be a DNS label (so never an IPv4 address either).
_DNS_BUCKET: Final = re.compile(r"(?!-)[a-z0-9-]{3,63}(?<!-)")
_PATH_PREFIX: Final = re.compile(r"(?:/[A-Za-z0-9\-_.~]+)*")
# The partitions whose S3 endpoints are s3.<region>.<suffix> (botocore's partitions.json).
_DNS_SUFFIXES: Final = (
    (re.compile(r"(?:us|eu|ap|sa|ca|me|af|il|mx)-\w+-\d+"), "amazonaws.com"),
    (re.compile(r"us-gov-\w+-\d+"), "amazonaws.com"),
    (re.compile(r"cn-\w+-\d+"), "amazonaws.com.cn"),
)


class _PathStyle:
    """`<endpoint>/<bucket>/<key>`: what MinIO, moto and other local S3s serve."""

    def __init__(self, endpoint_url: str) -> None:
        parts = urlsplit(endpoint_url)
        scheme = parts.scheme.lower()
        prefix = parts.path.rstrip("/")
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint URL must be http(s)://host[:port]: {endpoint_url!r}")
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError(f"endpoint URL must not carry a query or user info: {endpoint_url!r}")
        if not _PATH_PREFIX.fullmatch(prefix):
            raise ValueError(f"unsupported path in endpoint URL: {endpoint_url!r}")
        self._origin = f"{scheme}://{parts.netloc}"
        self._host = _host_header(scheme, parts.hostname, parts.port)
        self._prefix = prefix

    def target(self, bucket: str) -> _Target:
        return _Target(self._origin, self._host, f"{self._prefix}/{bucket}/")


class _VirtualHostStyle:
    """`https://<bucket>.s3.<region>.amazonaws.com/<key>`, as botocore addresses AWS."""

    def __init__(self, region: str) -> None:
        suffix = next((s for r, s in _DNS_SUFFIXES if r.fullmatch(region)), None)
        if suffix is None:
            raise ValueError(f"no known S3 endpoint for region {region!r}; pass an endpoint URL")
        # botocore keeps the legacy global endpoint for us-east-1 unless told otherwise.
        self._s3_host = "s3.amazonaws.com" if region == "us-east-1" else f"s3.{region}.{suffix}"

    def target(self, bucket: str) -> _Target:
        if bucket.endswith(("--x-s3", "--xa-s3")):
            raise ValueError(f"directory buckets need S3 Express session auth: {bucket!r}")
        if _DNS_BUCKET.fullmatch(bucket):
            host = f"{bucket}.{self._s3_host}"
            return _Target(f"https://{host}", host, "/")
        # Not a DNS label (dots, upper case, underscores, too long): TLS wildcard certificates
        # would not match it, so botocore falls back to path style on the same endpoint.
        return _Target(f"https://{self._s3_host}", self._s3_host, f"/{bucket}/")


def _host_header(scheme: str, hostname: str, port: int | None) -> str:
    host = f"[{hostname}]" if ":" in hostname else hostname  # IPv6 literals keep brackets
    if port is None or port == {"http": 80, "https": 443}[scheme]:
        return host
    return f"{host}:{port}"


# --- the presigner -------------------------------------------------------------------------------


class Presigner:
    """Presigns S3 GET URLs without calling boto3/botocore per URL."""

    _MAX_CACHED_BUCKETS: Final = 256
    _MAX_STAMPS: Final = 256

    def __init__(
        self, credentials: CredentialSource, region: str, endpoint_url: str | None
    ) -> None:
        if not region:
            raise ValueError("region is required: it is part of every signature")
        self._credentials = credentials
        self._region = region
        self._style = _PathStyle(endpoint_url) if endpoint_url else _VirtualHostStyle(region)
        # A service uses a handful of buckets: bounded only against the unexpected.
        self._targets: LRUCache[str, _Target] = LRUCache(maxsize=self._MAX_CACHED_BUCKETS)
        # One per signing time in use: a bucket's length of them at most, as jobs' buckets
        # start at offsets of whole seconds (`api.read_job.time_bucket`).
        self._stamps: dict[datetime, _Stamp] = {}

    @classmethod
    def from_boto3(
        cls,
        session: boto3.session.Session | None,
        region: str | None,
        endpoint_url: str | None,
    ) -> Presigner:
        """Credentials and region as boto3 resolves them (env, profile, IMDS, SSO...)."""
        session = session or boto3.session.Session()
        credentials = session.get_credentials()
        if credentials is None:
            raise ValueError("no AWS credentials found (env, shared files, or instance role)")
        # botocore signs for us-east-1 when no region is configured anywhere.
        region = region or session.region_name or "us-east-1"
        return cls(BotocoreCredentialSource(credentials), region, endpoint_url)

    def credentials(self) -> SigningCredentials:
        """The credentials URLs are signed with now: part of the key of any cache of URLs."""
        return self._credentials.current()

    def presign_get(self, bucket: str, key: str, expires_in: int, signed_at: datetime) -> str:
        """A GET URL for `bucket`/`key`, dated `signed_at` (aware), valid `expires_in` seconds
        (clamped to 1..7 days and to the credentials' remaining lifetime)."""
        if not key:
            raise ValueError("an S3 object key cannot be empty")
        target = self._targets.get(bucket) or self._add_target(bucket)
        stamp = self._stamp_for(self._credentials.current(), signed_at)
        params = f"{stamp.query_head}{max(1, min(expires_in, stamp.max_expires))}"
        path = target.path_prefix + encode_key(key)
        # The canonical query string is sorted by name: ...Expires, Security-Token, SignedHeaders.
        canonical_request = (
            f"GET\n{path}\n{params}{stamp.token_param}{_SIGNED_HEADERS}\n"
            f"host:{target.host}\n\nhost\nUNSIGNED-PAYLOAD"
        )
        digest = hashlib.sha256(canonical_request.encode()).hexdigest()
        string_to_sign = stamp.string_to_sign_head + digest
        signature = hmac.new(stamp.signing_key, string_to_sign.encode(), "sha256").hexdigest()
        # botocore puts the token after SignedHeaders in the URL itself; S3 does not care, but
        # byte-identical URLs keep comparisons (and ETags across implementations) simple.
        return (
            f"{target.origin}{path}?{params}{_SIGNED_HEADERS}{stamp.token_param}"
            f"&X-Amz-Signature={signature}"
        )

    def _stamp_for(self, credentials: SigningCredentials, signed_at: datetime) -> _Stamp:
        stamp = self._stamps.get(signed_at)
        if stamp is None or stamp.credentials is not credentials:
            if len(self._stamps) >= self._MAX_STAMPS:
                self._stamps.clear()  # past signing times: no URL is signed as of them again
            # Immutable: concurrent callers stay consistent without a lock.
            stamp = self._stamps[signed_at] = _Stamp.build(credentials, signed_at, self._region)
        return stamp

    def _add_target(self, bucket: str) -> _Target:
        if not _BUCKET_NAME.fullmatch(bucket):
            raise ValueError(f"invalid S3 bucket name: {bucket!r}")
        target = self._targets[bucket] = self._style.target(bucket)
        return target

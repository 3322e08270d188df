"""`api/presign.py` against botocore, the reference: for the same credentials, region, endpoint
and a frozen clock, our URL must be byte-identical to `generate_presigned_url("get_object")`.

botocore reads the time through `botocore.auth.get_current_datetime` (naive UTC); the tests
patch it. Besides one known answer from the AWS documentation, no URL is written down here.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Literal
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.credentials import Credentials, RefreshableCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from api.presign import (
    MAX_EXPIRES_SECONDS,
    BotocoreCredentialSource,
    Presigner,
    SigningCredentials,
    derive_signing_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SIGNED_AT = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
BUCKET = "my-bucket"
KEYS = SigningCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
# Session tokens are base64: `/`, `+` and `=` must be escaped in the query string.
TOKEN = "FwoGZXIvYXdzEJr//////////wEaDGV4YW1wbGUrdG9rZW4=="  # noqa: S105 - a made-up token
KEYS_WITH_TOKEN = SigningCredentials(KEYS.access_key, KEYS.secret_key, TOKEN)
EXPIRIES = (1, 900, MAX_EXPIRES_SECONDS)

AddressingStyle = Literal["path", "virtual"]


@dataclass(frozen=True)
class Target:
    """Where the URLs point, and how botocore is configured to point there."""

    region: str
    endpoint_url: str | None
    addressing_style: AddressingStyle


LOCAL = Target("us-east-1", "http://127.0.0.1:9000", "path")
TARGETS = {
    "path-style-local-endpoint": LOCAL,
    "path-style-https-host": Target("eu-west-1", "https://s3.example.com", "path"),
    "virtual-host-us-east-1": Target("us-east-1", None, "virtual"),
    "virtual-host-eu-west-1": Target("eu-west-1", None, "virtual"),
}


@pytest.fixture(autouse=True, scope="module")
def _no_ambient_aws_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """botocore reads env vars and ~/.aws (regional endpoints, FIPS, profiles, IMDS):
    keep the reference independent of the machine the tests run on."""
    missing = str(tmp_path_factory.mktemp("aws") / "missing")
    with pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            env.delenv(name)
        env.setenv("AWS_CONFIG_FILE", missing)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(params=list(TARGETS.values()), ids=list(TARGETS))
def target(request: pytest.FixtureRequest) -> Target:
    result: Target = request.param
    return result


# --- the reference and ours ----------------------------------------------------------------------


@functools.cache
def _botocore_client(target: Target, credentials: SigningCredentials) -> S3Client:
    session = boto3.session.Session(
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        aws_session_token=credentials.token,
        region_name=target.region,
    )
    return _client_of(session, target)


def _client_of(session: boto3.session.Session, target: Target) -> S3Client:
    config = Config(signature_version="s3v4", s3={"addressing_style": target.addressing_style})
    return session.client("s3", endpoint_url=target.endpoint_url, config=config)


def _frozen_botocore(client: S3Client, bucket: str, key: str, expires_in: int) -> str:
    naive_utc = SIGNED_AT.replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=naive_utc):
        return client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in
        )


def botocore_url(
    target: Target,
    key: str,
    *,
    expires_in: int = 900,
    credentials: SigningCredentials = KEYS,
    bucket: str = BUCKET,
) -> str:
    return _frozen_botocore(_botocore_client(target, credentials), bucket, key, expires_in)


def our_url(
    target: Target,
    key: str,
    *,
    expires_in: int = 900,
    credentials: SigningCredentials = KEYS,
    bucket: str = BUCKET,
) -> str:
    presigner = Presigner(credentials, target.region, target.endpoint_url)
    return presigner.presign_get(bucket, key, expires_in, SIGNED_AT)


def assert_matches_botocore(target: Target, key: str, bucket: str = BUCKET) -> None:
    for credentials in (KEYS, KEYS_WITH_TOKEN):
        for expires_in in EXPIRIES:
            ours = our_url(
                target, key, expires_in=expires_in, credentials=credentials, bucket=bucket
            )
            theirs = botocore_url(
                target, key, expires_in=expires_in, credentials=credentials, bucket=bucket
            )
            assert ours == theirs


def query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


# --- byte-identical to botocore -----------------------------------------------------------------


def test_botocore_reference_signs_at_the_frozen_time() -> None:
    # Guards the other tests: if botocore stopped reading the patched clock, they would
    # compare against URLs dated now and fail for the wrong reason.
    assert query(botocore_url(LOCAL, "k"))["X-Amz-Date"] == "20250304T050607Z"


def test_url_matches_botocore_for_plain_keys(target: Target) -> None:
    assert_matches_botocore(target, "jobs/0b8f6c1e-4a1d-4c3e-9d7b-2f1e8a9c0d11/result.json")


def test_url_matches_botocore_for_keys_with_spaces(target: Target) -> None:
    assert_matches_botocore(target, "reports/2025 Q1/final  report .pdf")


def test_url_matches_botocore_for_keys_with_plus_signs(target: Target) -> None:
    assert_matches_botocore(target, "a+b/c++.txt")


def test_url_matches_botocore_for_keys_with_accented_letters(target: Target) -> None:
    assert_matches_botocore(target, "Müller/übersicht-Ärger.csv")


def test_url_matches_botocore_for_keys_with_emoji(target: Target) -> None:
    assert_matches_botocore(target, "logs/😀🚀 launch.txt")


def test_url_matches_botocore_for_keys_with_cjk(target: Target) -> None:
    assert_matches_botocore(target, "数据/报告/東京.json")


def test_url_matches_botocore_for_keys_with_reserved_characters(target: Target) -> None:
    assert_matches_botocore(target, "x/?#&=%;:@$,!'()*[]~-_./%2F%20")


@pytest.mark.parametrize("key", ["/leading/slash", "a//b///c", "//", "trailing/", "a/../b/./c"])
def test_url_matches_botocore_for_slash_runs_and_dot_segments(target: Target, key: str) -> None:
    assert_matches_botocore(target, key)


@pytest.mark.parametrize("key", ["k" * 1024, "ü/" * 341 + "x", "漢" * 341 + "a", "😀" * 256])
def test_url_matches_botocore_for_1024_byte_keys(target: Target, key: str) -> None:
    assert len(key.encode()) == 1024
    assert_matches_botocore(target, key)


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_aws_urls_are_virtual_hosted_for_dns_compatible_buckets(region: str) -> None:
    target = Target(region, None, "virtual")
    host = (
        "my-bucket.s3.amazonaws.com"
        if region == "us-east-1"
        else f"my-bucket.s3.{region}.amazonaws.com"
    )
    url = our_url(target, "k")
    assert url.startswith(f"https://{host}/k?")
    assert url == botocore_url(target, "k")


@pytest.mark.parametrize("bucket", ["my.bucket", "MyBucket", "my_bucket", "a" * 64, "192.168.1.1"])
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_buckets_that_cannot_be_dns_labels_fall_back_to_path_style_like_botocore(
    region: str, bucket: str
) -> None:
    target = Target(region, None, "virtual")
    s3_host = "s3.amazonaws.com" if region == "us-east-1" else f"s3.{region}.amazonaws.com"
    assert our_url(target, "k", bucket=bucket).startswith(f"https://{s3_host}/{bucket}/k?")
    assert_matches_botocore(target, "a b/ü", bucket=bucket)


@pytest.mark.parametrize("region", ["cn-north-1", "us-gov-west-1", "ap-southeast-2"])
def test_url_matches_botocore_in_other_aws_partitions(region: str) -> None:
    assert_matches_botocore(Target(region, None, "virtual"), "a b/ü")


@pytest.mark.parametrize(
    "endpoint_url",
    [
        "https://s3.example.com:443",  # the default port stays in the URL, not in the Host
        "http://localhost:9000/",
        "HTTP://LocalHost:9000",  # the Host header is signed lower-case
        "http://[::1]:9000",
        "https://s3.example.com/storage",
        "https://s3.example.com/storage/v1/",
    ],
)
def test_url_matches_botocore_for_endpoint_variants(endpoint_url: str) -> None:
    assert_matches_botocore(Target("eu-west-1", endpoint_url, "path"), "a b/ü")


utf8_keys = st.text(
    alphabet=st.one_of(st.sampled_from("/ +%?#&=;:@$,!'()*[]~-_."), st.characters(codec="utf-8")),
    min_size=1,
    max_size=1024,
).map(lambda key: key.encode()[:1024].decode(errors="ignore"))  # 1..1024 UTF-8 bytes


@settings(max_examples=200, deadline=None)
@given(key=utf8_keys, target=st.sampled_from(list(TARGETS.values())), token=st.booleans())
def test_url_matches_botocore_for_random_unicode_keys(
    key: str, target: Target, token: bool
) -> None:
    credentials = KEYS_WITH_TOKEN if token else KEYS
    assert 1 <= len(key.encode()) <= 1024
    assert our_url(target, key, credentials=credentials) == botocore_url(
        target, key, credentials=credentials
    )


def test_url_matches_the_aws_documentation_example() -> None:
    # docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
    credentials = SigningCredentials(
        "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    )
    presigner = Presigner(credentials, "us-east-1", None)
    url = presigner.presign_get(
        "examplebucket", "test.txt", 86400, datetime(2013, 5, 24, tzinfo=UTC)
    )
    assert url == (
        "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


def test_signed_at_in_another_timezone_signs_the_same_instant() -> None:
    presigner = Presigner(KEYS, LOCAL.region, LOCAL.endpoint_url)
    in_paris = SIGNED_AT.astimezone(timezone(timedelta(hours=1)))
    assert presigner.presign_get(BUCKET, "k", 900, in_paris) == botocore_url(LOCAL, "k")


# --- expiry clamping -----------------------------------------------------------------------------


@pytest.mark.parametrize("asked", [0, -5])
def test_expires_below_one_second_is_signed_as_one_second(asked: int) -> None:
    url = our_url(LOCAL, "k", expires_in=asked)
    assert query(url)["X-Amz-Expires"] == "1"
    assert url == botocore_url(LOCAL, "k", expires_in=1)


def test_expires_beyond_seven_days_is_signed_as_seven_days() -> None:
    url = our_url(LOCAL, "k", expires_in=10**7)
    assert query(url)["X-Amz-Expires"] == "604800"
    assert url == botocore_url(LOCAL, "k", expires_in=604800)


def test_expires_is_cut_to_the_credentials_remaining_lifetime() -> None:
    expiring = SigningCredentials(
        KEYS.access_key, KEYS.secret_key, TOKEN, expires_at=SIGNED_AT + timedelta(seconds=120.9)
    )
    url = our_url(LOCAL, "k", expires_in=900, credentials=expiring)
    assert query(url)["X-Amz-Expires"] == "120"
    assert url == botocore_url(LOCAL, "k", expires_in=120, credentials=KEYS_WITH_TOKEN)


def test_expires_within_the_credentials_lifetime_is_kept() -> None:
    expiring = SigningCredentials(
        KEYS.access_key, KEYS.secret_key, TOKEN, expires_at=SIGNED_AT + timedelta(hours=1)
    )
    assert (
        query(our_url(LOCAL, "k", expires_in=900, credentials=expiring))["X-Amz-Expires"] == "900"
    )


def test_credentials_already_expired_at_signed_at_give_one_second() -> None:
    expired = SigningCredentials(
        KEYS.access_key, KEYS.secret_key, TOKEN, expires_at=SIGNED_AT - timedelta(minutes=5)
    )
    assert query(our_url(LOCAL, "k", credentials=expired))["X-Amz-Expires"] == "1"


# --- credentials from boto3 ----------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def datetime(self) -> datetime:
        return self.now

    def timestamp(self) -> float:
        return self.now.timestamp()


def refreshable(
    clock: FakeClock, expires_at: datetime, next_access_key: str
) -> RefreshableCredentials:
    def refresh() -> dict[str, str]:
        return {
            "access_key": next_access_key,
            "secret_key": KEYS.secret_key,
            "token": TOKEN,
            "expiry_time": (clock.now + timedelta(hours=1)).isoformat(),
        }

    return RefreshableCredentials(
        KEYS.access_key, KEYS.secret_key, TOKEN, expires_at, refresh, "test", clock.datetime
    )


def test_expires_is_cut_to_the_lifetime_of_refreshable_boto3_credentials() -> None:
    clock = FakeClock(SIGNED_AT)
    credentials = refreshable(clock, SIGNED_AT + timedelta(hours=1), "AKIDNEXT")
    presigner = Presigner(
        BotocoreCredentialSource(credentials, clock.timestamp), LOCAL.region, LOCAL.endpoint_url
    )
    url = presigner.presign_get(BUCKET, "k", 7200, SIGNED_AT)
    assert query(url)["X-Amz-Expires"] == "3600"
    assert url == botocore_url(LOCAL, "k", expires_in=3600, credentials=KEYS_WITH_TOKEN)


def test_refreshable_credentials_are_reread_only_near_expiry() -> None:
    clock = FakeClock(SIGNED_AT)
    credentials = refreshable(clock, SIGNED_AT + timedelta(hours=1), "AKIDNEXT")
    source = BotocoreCredentialSource(credentials, clock.timestamp)
    with mock.patch.object(
        credentials, "get_frozen_credentials", wraps=credentials.get_frozen_credentials
    ) as reads:
        clock.now = SIGNED_AT + timedelta(minutes=44)
        assert source.current().access_key == KEYS.access_key
        assert reads.call_count == 0
        clock.now = SIGNED_AT + timedelta(minutes=46)  # inside botocore's 15-minute window
        assert source.current().access_key == KEYS.access_key, "served while refreshing"
        renewed = _eventually_not(source, KEYS.access_key)
    assert renewed.access_key == "AKIDNEXT"
    assert renewed.expires_at == clock.now + timedelta(hours=1)


def _eventually_not(source: BotocoreCredentialSource, access_key: str) -> SigningCredentials:
    deadline = time.monotonic() + 10
    while (found := source.current()).access_key == access_key:
        assert time.monotonic() < deadline, "the refresh never landed"
        time.sleep(0.01)
    return found


def test_a_refresh_that_blocks_never_holds_up_signing() -> None:
    """STS or the instance metadata service taking 2 s: URLs are signed with the credentials
    in hand meanwhile, each in microseconds, and the new ones arrive after."""
    clock = FakeClock(SIGNED_AT)
    slow_refresh_started = threading.Event()

    def slow_refresh() -> dict[str, str]:
        slow_refresh_started.set()
        time.sleep(2)
        return {
            "access_key": "AKIDSLOW",
            "secret_key": KEYS.secret_key,
            "token": TOKEN,
            "expiry_time": (clock.now + timedelta(hours=1)).isoformat(),
        }

    credentials = RefreshableCredentials(
        KEYS.access_key,
        KEYS.secret_key,
        TOKEN,
        SIGNED_AT + timedelta(hours=1),
        slow_refresh,
        "test",
        clock.datetime,
    )
    source = BotocoreCredentialSource(credentials, clock.timestamp)
    presigner = Presigner(source, LOCAL.region, LOCAL.endpoint_url)
    clock.now = SIGNED_AT + timedelta(minutes=50)  # due: botocore refreshes on the next read
    started = time.monotonic()
    signed = 0
    while not slow_refresh_started.is_set() or time.monotonic() - started < 1.5:
        one = time.monotonic()
        presigner.presign_get(BUCKET, f"k{signed}", 900, SIGNED_AT)
        assert time.monotonic() - one < 0.1, "a signature waited for the refresh"
        signed += 1
    assert presigner.credentials().access_key == KEYS.access_key, "still the old ones"
    assert signed > 1000
    assert _eventually_not(source, KEYS.access_key).access_key == "AKIDSLOW"


def test_botocore_is_not_called_per_url() -> None:
    credentials = Credentials(KEYS.access_key, KEYS.secret_key, TOKEN)
    presigner = Presigner(BotocoreCredentialSource(credentials), LOCAL.region, LOCAL.endpoint_url)
    with (
        mock.patch.object(credentials, "get_frozen_credentials", side_effect=AssertionError),
        mock.patch("botocore.auth.S3SigV4QueryAuth.add_auth", side_effect=AssertionError),
    ):
        urls = [presigner.presign_get(BUCKET, f"k{i}", 900, SIGNED_AT) for i in range(50)]
    assert urls[7] == botocore_url(LOCAL, "k7", credentials=KEYS_WITH_TOKEN)


@pytest.mark.parametrize("target", list(TARGETS.values()), ids=list(TARGETS))
def test_from_boto3_matches_the_sessions_own_client(target: Target) -> None:
    session = boto3.session.Session(
        aws_access_key_id=KEYS.access_key,
        aws_secret_access_key=KEYS.secret_key,
        aws_session_token=TOKEN,
        region_name=target.region,
    )
    presigner = Presigner.from_boto3(session, None, target.endpoint_url)
    ours = presigner.presign_get(BUCKET, "a b/ü", 900, SIGNED_AT)
    assert ours == _frozen_botocore(_client_of(session, target), BUCKET, "a b/ü", 900)


def test_from_boto3_region_argument_overrides_the_session() -> None:
    session = boto3.session.Session(
        aws_access_key_id=KEYS.access_key,
        aws_secret_access_key=KEYS.secret_key,
        region_name="eu-west-1",
    )
    url = Presigner.from_boto3(session, "ap-southeast-2", None).presign_get(
        BUCKET, "k", 900, SIGNED_AT
    )
    assert url == botocore_url(Target("ap-southeast-2", None, "virtual"), "k")


def test_from_boto3_signs_for_us_east_1_when_no_region_is_configured() -> None:
    session = boto3.session.Session(
        aws_access_key_id=KEYS.access_key, aws_secret_access_key=KEYS.secret_key
    )
    assert session.region_name is None
    url = Presigner.from_boto3(session, None, LOCAL.endpoint_url).presign_get(
        BUCKET, "k", 900, SIGNED_AT
    )
    assert query(url)["X-Amz-Credential"].split("/")[2] == "us-east-1"
    assert url == botocore_url(LOCAL, "k")


def test_from_boto3_without_credentials_fails_at_startup() -> None:
    with pytest.raises(ValueError, match="no AWS credentials"):
        Presigner.from_boto3(boto3.session.Session(), "eu-west-1", None)


# --- caching -------------------------------------------------------------------------------------


def test_signing_key_matches_the_aws_documentation_example() -> None:
    # docs.aws.amazon.com/IAM/latest/UserGuide/signing-elements.html (derived signing key)
    key = derive_signing_key(KEYS.secret_key, "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_signing_key_is_derived_once_per_day_and_region() -> None:
    derive_signing_key.cache_clear()
    presigner = Presigner(KEYS, LOCAL.region, LOCAL.endpoint_url)
    for minutes in (0, 0, 1, 2, 60):
        presigner.presign_get(BUCKET, "k", 900, SIGNED_AT + timedelta(minutes=minutes))
    assert derive_signing_key.cache_info().misses == 1
    presigner.presign_get(BUCKET, "k", 900, SIGNED_AT + timedelta(days=1))
    Presigner(KEYS, "eu-west-1", LOCAL.endpoint_url).presign_get(BUCKET, "k", 900, SIGNED_AT)
    assert derive_signing_key.cache_info().misses == 3


def test_cached_signing_state_follows_new_credentials() -> None:
    class Rotating:
        def __init__(self) -> None:
            self.credentials = KEYS

        def current(self) -> SigningCredentials:
            return self.credentials

    source = Rotating()
    presigner = Presigner(source, LOCAL.region, LOCAL.endpoint_url)
    assert presigner.presign_get(BUCKET, "k", 900, SIGNED_AT) == botocore_url(LOCAL, "k")
    source.credentials = KEYS_WITH_TOKEN
    assert presigner.presign_get(BUCKET, "k", 900, SIGNED_AT) == botocore_url(
        LOCAL, "k", credentials=KEYS_WITH_TOKEN
    )


# --- refusals ------------------------------------------------------------------------------------


def test_naive_signed_at_is_rejected() -> None:
    presigner = Presigner(KEYS, LOCAL.region, LOCAL.endpoint_url)
    with pytest.raises(ValueError, match="timezone-aware"):
        presigner.presign_get(BUCKET, "k", 900, SIGNED_AT.replace(tzinfo=None))


def test_empty_key_is_rejected_as_botocore_does() -> None:
    with pytest.raises(ValueError, match="empty"):
        our_url(LOCAL, "")


@pytest.mark.parametrize("bucket", ["", "my bucket", "a/b", "b?x", "ü-bucket"])
def test_invalid_bucket_names_are_rejected(bucket: str) -> None:
    with pytest.raises(ValueError, match="bucket name"):
        our_url(LOCAL, "k", bucket=bucket)


@pytest.mark.parametrize("bucket", ["data--use1-az4--x-s3", "data--use1-az4--xa-s3"])
def test_directory_buckets_are_rejected_on_aws(bucket: str) -> None:
    with pytest.raises(ValueError, match="directory buckets"):
        our_url(Target("us-east-1", None, "virtual"), "k", bucket=bucket)


def test_regions_outside_the_known_partitions_need_an_endpoint_url() -> None:
    with pytest.raises(ValueError, match="no known S3 endpoint"):
        Presigner(KEYS, "us-iso-east-1", None)
    assert_matches_botocore(Target("us-iso-east-1", "https://s3.example.com", "path"), "k")


@pytest.mark.parametrize(
    "endpoint_url",
    [
        "ftp://s3.example.com",
        "s3.example.com",
        "https://s3.example.com/?x=1",
        "https://u:p@s3.example.com",
        "https://s3.example.com/a%20b",
    ],
)
def test_unsupported_endpoint_urls_are_rejected(endpoint_url: str) -> None:
    with pytest.raises(ValueError, match="endpoint URL"):
        Presigner(KEYS, "eu-west-1", endpoint_url)

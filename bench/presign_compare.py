"""Per-URL cost of `api.presign.Presigner` against botocore's `generate_presigned_url`.

    uv run python bench/presign_compare.py [--n 20000] [--repeats 5]

Both sign the same keys with the same static credentials (with a session token, as role
credentials have); ours is first checked to produce the same URLs under a frozen clock.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal
from unittest import mock

import boto3
from botocore.config import Config

from api.presign import Presigner

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "job-artifacts"
SIGNED_AT = datetime(2025, 3, 4, 5, 6, 0, tzinfo=UTC)
EXPIRES_IN = 360
# Made-up (access key, secret key, session token) in the shape of real role credentials.
EXAMPLE_CREDENTIALS = (
    "AKIDEXAMPLE",
    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "FwoGZXIvYXdzEJr//////////wEaDGV4YW1wbGUrdG9rZW4==",
)
SETUPS: dict[str, tuple[str, str | None, Literal["path", "virtual"]]] = {
    "path-style http://127.0.0.1:9000": ("us-east-1", "http://127.0.0.1:9000", "path"),
    "virtual-host eu-west-1": ("eu-west-1", None, "virtual"),
}


def sample_keys(count: int = 100) -> list[str]:
    """Mostly the plain keys the service writes, some that need escaping."""
    plain = [f"jobs/{uuid.UUID(int=i)}/artifacts/image-{i}.png" for i in range(count * 4 // 5)]
    odd = [f"uploads/user {i}/Müller+Söhne 😀 報告 {i}.png" for i in range(count - len(plain))]
    return plain + odd


def per_url_us(sign: Callable[[str], str], keys: Sequence[str], n: int, repeats: int) -> float:
    """Median over `repeats` runs of signing `n` keys, in µs per URL."""
    batch = list(itertools.islice(itertools.cycle(keys), n))
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for key in batch:
            sign(key)
        runs.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(runs)


def botocore_client(
    session: boto3.session.Session, endpoint: str | None, style: Literal["path", "virtual"]
) -> S3Client:
    config = Config(signature_version="s3v4", s3={"addressing_style": style})
    return session.client("s3", endpoint_url=endpoint, config=config)


def presign_cost(name: str, keys: Sequence[str], n: int, repeats: int) -> dict[str, float]:
    """µs per URL, ours against botocore (s3v4), for one addressing setup; checks first that
    both give the same URLs for a frozen clock."""
    region, endpoint, style = SETUPS[name]
    access_key, secret_key, token = EXAMPLE_CREDENTIALS
    session = boto3.session.Session(access_key, secret_key, token, region)
    client = botocore_client(session, endpoint, style)
    presigner = Presigner.from_boto3(session, region, endpoint)

    def theirs(key: str) -> str:
        return client.generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=EXPIRES_IN
        )

    def ours(key: str) -> str:
        return presigner.presign_get(BUCKET, key, EXPIRES_IN, SIGNED_AT)

    frozen = SIGNED_AT.replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=frozen):
        assert all(ours(key) == theirs(key) for key in keys), f"{name}: URLs differ"
    ours_us = per_url_us(ours, keys, n, repeats)
    botocore_us = per_url_us(theirs, keys, n, repeats)
    return {
        "ours_us_per_url": ours_us,
        "botocore_us_per_url": botocore_us,
        "speedup": botocore_us / ours_us,
    }


def compare(name: str, keys: Sequence[str], n: int, repeats: int) -> None:
    cost = presign_cost(name, keys, n, repeats)
    print(
        f"{name:36s} ours {cost['ours_us_per_url']:6.2f} µs/URL   "
        f"botocore {cost['botocore_us_per_url']:7.1f} µs/URL   {cost['speedup']:5.1f}x faster"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=20_000, help="signings per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median is shown)")
    args = parser.parse_args()
    keys = sample_keys()
    print(f"{len(keys)} distinct keys, {args.n} signings per run, median of {args.repeats} runs")
    for name in SETUPS:
        compare(name, keys, args.n, args.repeats)


if __name__ == "__main__":
    main()

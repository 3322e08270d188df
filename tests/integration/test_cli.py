"""The processes' command lines: unreachable parts are one clear line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devstack.processes import free_port

pytestmark = pytest.mark.integration


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_broker_that_does_not_answer_stops_the_projector_with_one_line() -> None:
    done = run(
        ["-m", "projector", "run"],
        {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "ARTIFACT_BUCKETS": "renders"},
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "configuration error: KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:" in done.stderr
    assert "no Kafka broker answered" in done.stderr


def test_a_redis_that_does_not_answer_stops_the_projector_with_one_line(
    kafka_bootstrap: str,
) -> None:
    url = f"redis://:secret-password@127.0.0.1:{free_port()}/0"
    done = run(
        ["-m", "projector", "run"],
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "REDIS_URL": url,
            "ARTIFACT_BUCKETS": "renders",
        },
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "configuration error: REDIS_URL=redis://:***@127.0.0.1:" in done.stderr
    assert "secret-password" not in done.stderr


def test_a_malformed_redis_url_stops_the_api_with_one_line() -> None:
    secret = "cli-test-secret-0123456789abcdef0123"  # noqa: S105 - a test key
    env = {"REDIS_URL": "localhost:6379", "JWT_SECRET": secret, "ARTIFACT_BUCKETS": "renders"}
    done = run(["-m", "api"], env)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "configuration error: REDIS_URL: must start with redis://, rediss:// or unix://"
    )


def test_replay_help_and_run_help_document_themselves() -> None:
    done = run(["-m", "projector", "--help"], {})
    assert done.returncode == 0
    assert "run" in done.stdout

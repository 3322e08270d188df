"""The contract as a package of its own (`contracts/pyproject.toml`): a worker service installs
it into a virtualenv of its own - pydantic and aiokafka, nothing of the service - and
publishes an event that the projector applies."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from devstack.data import event_dict, ulid
from devstack.processes import LocalProcess
from devstack.services import REPO
from tests.integration.projection import projector_env, spawn, stored_state, wait_until_caught_up

pytestmark = pytest.mark.integration

WORKER = """
import asyncio, json, sys
from contracts import JobEvent
from contracts.publisher import JobEventPublisher

async def main() -> None:
    bootstrap, topic, document = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    async with JobEventPublisher(bootstrap, topic, idempotent=False) as publisher:
        await publisher.publish(JobEvent.model_validate(document, strict=False))

asyncio.run(main())
"""


def uv() -> list[str]:
    """uv as `make` found or installed it."""
    found = shutil.which("uv") or next(
        (str(p) for p in [REPO / ".tools" / "uv" / "bin" / "uv"] if p.exists()), None
    )
    return [found] if found else [sys.executable, "-m", "uv"]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def worker_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with only the contracts package (and what it needs)."""
    folder = tmp_path_factory.mktemp("worker")
    run([*uv(), "build", "--wheel", str(REPO / "contracts"), "-o", str(folder / "dist")])
    (wheel,) = (folder / "dist").glob("jobs_contracts-*.whl")
    venv = folder / "venv"
    run([*uv(), "venv", "--quiet", "--python", sys.executable, str(venv)])
    python = venv / "bin" / "python"
    run([*uv(), "pip", "install", "--quiet", "--python", str(python), str(wheel)])
    return python


def test_the_package_brings_the_contract_and_nothing_of_the_service(worker_python: Path) -> None:
    listed = run([*uv(), "pip", "list", "--python", str(worker_python)]).stdout
    names = {line.split()[0].lower() for line in listed.splitlines()[2:] if line.strip()}
    assert {"jobs-contracts", "pydantic", "aiokafka"} <= names
    assert not names & {"fastapi", "redis", "boto3", "faststream", "jobs-read-model"}
    schema = run(
        [
            str(worker_python),
            "-c",
            "import importlib.resources as r; "
            "print(len(r.files('contracts').joinpath('schema/job_event.v1.json').read_text()))",
        ]
    )
    assert int(schema.stdout) > 1000


async def test_a_worker_with_the_package_publishes_an_event_the_projector_applies(
    worker_python: Path,
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    import json

    job_id = ulid()
    document = event_dict(job_id=job_id, seq=1, kind="queued")
    run([str(worker_python), "-c", WORKER, kafka_bootstrap, topic, json.dumps(document)])
    processes.append(spawn(projector_env(kafka_bootstrap, topic, redis_url, version), tmp_path))
    await wait_until_caught_up(kafka_bootstrap, topic, version, 1)
    state = await stored_state(redis, version, ("acme", job_id))
    assert state.head is not None
    assert state.head.status == "QUEUED"

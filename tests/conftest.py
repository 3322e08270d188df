"""Session fixtures: the real broker, Redis and S3 (see `devstack`), started once.

Nothing starts for a run of `tests/unit` alone: the stack is a lazy session fixture. Every
test gets its own topic names and projection version, so tests never see each other's data
(and an address given in the environment can be shared safely).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from devstack import Stack, create_bucket, create_topics, start_stack
from devstack.processes import LocalProcess, start_redis
from tests import log_audit

_running: list[Stack] = []


@pytest.fixture(scope="session", autouse=True)
def audited_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the run when a log line of our processes holds a token, a secret or a presigned
    URL's signature (what is read and what counts: `tests.log_audit`).

    Session-scoped and autouse, so it is set up before any other session fixture and torn
    down after all of them: every projector, api and server has stopped and written its last
    line. A failure here is an error in the teardown of the run's last test, and pytest then
    exits non-zero, whichever tests were selected. The logs are read where the harness left
    them, under pytest's base temporary folder (kept after the run by pytest's default
    retention, so an offending file:line can be opened).
    """
    folder = tmp_path_factory.mktemp("log-audit", numbered=False)
    with log_audit.recording(folder) as recorder:
        yield
    leaks = log_audit.audit(tmp_path_factory.getbasetemp(), recorder)
    if leaks:
        pytest.fail(log_audit.report(leaks), pytrace=False)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(Path(tmp_path_factory.mktemp("stack")))
    _running.append(started)
    try:
        yield started
    finally:
        _running.remove(started)
        started.stop()


@pytest.fixture
def processes() -> Iterator[list[LocalProcess]]:
    """The processes a test starts (projectors, an api, a broker); stopped after it."""
    started: list[LocalProcess] = []
    yield started
    for process in reversed(started):
        process.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[LocalProcess]:
    """A redis-server of this test alone, so that it can be frozen, paused or killed."""
    server = start_redis(tmp_path)
    yield server
    server.stop()


@pytest.fixture
async def own_redis_client(own_redis: LocalProcess) -> AsyncIterator[Redis]:
    client = Redis(port=own_redis.port, socket_timeout=30)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: Stack) -> str:
    return stack.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(stack: Stack) -> str:
    return stack.redis_url


@pytest.fixture(scope="session")
def s3_endpoint(stack: Stack) -> str:
    return stack.s3_endpoint_url


@pytest.fixture(scope="session")
def bucket(stack: Stack) -> str:
    name = "test-renders"
    create_bucket(stack, name)
    return name


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def topic(kafka_bootstrap: str, unique: str) -> str:
    """A fresh 4-partition events topic and its dead-letter topic."""
    name = f"jobs.events.{unique}"
    await create_topics(kafka_bootstrap, {name: 4, f"{name}.dlq": 1})
    return name


@pytest.fixture
def version(unique: str) -> str:
    return f"t{unique}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if isinstance(report, pytest.TestReport) and report.failed and _running:
        report.sections.append(("real parts: log tails", _running[0].logs()))
    return report

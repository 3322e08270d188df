"""A running projector recovers from a Redis outage on its own: the batch that failed is
written once Redis is back, with or without further traffic, and commits move again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from devstack.processes import LocalProcess, start_redis
from tests.integration.projection import (
    assert_projection_equals_fold,
    expected_states,
    job_events,
    produce,
    projector_env,
    spawn,
    stored_state,
    wait_until_caught_up,
)
from tests.integration.support import eventually

pytestmark = pytest.mark.integration


async def test_redis_killed_and_restarted_mid_stream_the_running_projector_catches_up_alone(
    kafka_bootstrap: str,
    topic: str,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    redis_server = start_redis(tmp_path, durable=True)
    port = redis_server.port
    processes.append(redis_server)
    client = Redis(port=port, socket_timeout=5)
    events = job_events(jobs=6)
    first, during, after = events[:10], events[10:20], events[20:]
    try:
        processes.append(
            spawn(projector_env(kafka_bootstrap, topic, client_url(port), version), tmp_path)
        )
        await produce(kafka_bootstrap, topic, first)
        await wait_until_caught_up(kafka_bootstrap, topic, version, len(first))

        redis_server.process.kill()  # SIGKILL: what it acknowledged is in its append-only file
        redis_server.process.wait(timeout=10)
        await produce(kafka_bootstrap, topic, during)
        projector = processes[1]
        await eventually(
            lambda: _logged(projector, "not written"), 30, "the projector met the outage"
        )
        restarted = start_redis(tmp_path, port=port, durable=True)
        processes.append(restarted)

        # No further traffic: the failed batch is retried on the projector's timer.
        waiting = expected_states(during)

        async def during_visible() -> bool:
            return all(
                [
                    await stored_state(client, version, ref) == state
                    for ref, state in waiting.items()
                ]
            )

        await eventually(during_visible, 30, "the events produced during the outage visible")
        await eventually(
            lambda: _logged(projector, "done now"), 10, "the projector said it recovered"
        )
        await wait_until_caught_up(
            kafka_bootstrap, topic, version, len(first) + len(during), timeout=30
        )

        # Further traffic is applied and committed as usual.
        await produce(kafka_bootstrap, topic, after)
        await wait_until_caught_up(kafka_bootstrap, topic, version, len(events), timeout=30)
        await assert_projection_equals_fold(client, version, events)
        assert projector.process.poll() is None, "the same process recovered"
    finally:
        await client.aclose()


def client_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


async def _logged(process: LocalProcess, text: str) -> bool:
    await asyncio.sleep(0)
    return text in process.log_path.read_text(errors="replace")

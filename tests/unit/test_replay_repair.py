"""`replay job` without I/O: which records make the job, the diff of a damaged hash."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord

from contracts.job_state import encode_state
from contracts.publisher import encode_event
from devstack.data import STORAGE, event
from projector.event_fields import fields_of
from projector.fold import fold
from projector.intake import Record
from projector.replay.repair import job_to_repair, stored_differences

JOB = "01JDQ8Z3M4W8K2V7T6R5N4P3Q2"


def record(key: bytes | None, value: bytes | None, offset: int = 0) -> Record:
    return ConsumerRecord("jobs", 3, offset, 0, 0, key, value, None, 1, 1, [])


def stored(**fields: str) -> dict[bytes, bytes]:
    return {name.encode(): value.encode() for name, value in fields.items()}


def test_an_id_in_lower_case_is_stored_upper_case_and_read_under_both_keys() -> None:
    job = job_to_repair("acme", JOB.lower(), STORAGE)

    assert job is not None
    assert job.job_id == JOB
    assert job.keys == [JOB.encode(), JOB.lower().encode()]


def test_an_id_in_mixed_case_is_read_under_that_key_too() -> None:
    mixed = JOB[:13] + JOB[13:].lower()
    job = job_to_repair("acme", mixed, STORAGE)

    assert job is not None
    assert job.keys == [JOB.encode(), JOB.lower().encode(), mixed.encode()]


@pytest.mark.parametrize(("tenant", "job_id"), [("Acme", JOB), ("acme", "not-a-ulid"), ("", JOB)])
def test_input_that_names_no_job_is_refused(
    tenant: str, job_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert job_to_repair(tenant, job_id, STORAGE) is None
    assert capsys.readouterr().err.startswith("--")


def test_only_valid_events_of_the_tenant_under_the_jobs_key_make_the_job() -> None:
    job = job_to_repair("acme", JOB, STORAGE)
    assert job is not None
    mine = [event(job_id=JOB, seq=1), event(job_id=JOB.lower(), seq=2, kind="queued")]
    records = [
        record(JOB.encode(), encode_event(mine[0])),
        record(JOB.lower().encode(), encode_event(mine[1]), offset=1),
        record(JOB.encode(), encode_event(event(job_id=JOB, tenant_id="globex", seq=3))),
        record(b"01JDQ8Z3M4000000000000000Z", encode_event(event(seq=4))),  # another key
        record(None, encode_event(event(job_id=JOB, seq=5))),
        record(JOB.encode(), b"{}", offset=7),
        record(JOB.encode(), None, offset=8),
    ]
    for each in records:
        job.add(each)

    assert job.events == [fields_of(e) for e in mine]
    assert job.state() == fold(mine)
    assert job.found == {3: 2}
    assert [offset for _, offset, _ in job.invalid] == [7, 8]
    assert job.others == 1


def test_a_damaged_status_is_one_line() -> None:
    state = fold([event(seq=1), event(seq=2, kind="stage")])
    fields = encode_state(state)
    damaged = stored(**{**fields, "h": fields["h"].replace("RUNNING", "FAILED")})

    assert stored_differences(damaged, state) == ["head.status: redis=FAILED topic=RUNNING"]
    assert stored_differences(stored(**fields), state) == []


def test_a_hash_that_does_not_decode_is_shown_raw() -> None:
    state = fold([event(seq=1)])
    damaged = stored(**{**encode_state(state), "o": "garbage"})

    lines = stored_differences(damaged, state)

    assert lines[0].startswith("redis does not decode: ")
    assert lines[1:] == [f"o: redis='garbage' topic={encode_state(state)['o']!r}"]


def test_fields_beyond_the_groups_are_a_difference() -> None:
    state = fold([event(seq=1)])

    lines = stored_differences(stored(**encode_state(state), x="1"), state)

    assert lines == ["field 'x': only in redis"]

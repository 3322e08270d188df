"""The pure parts of `replay verify` and `replay drop`: sampling, call grouping, the diff."""

from __future__ import annotations

import random
from collections import Counter

from redis.crc import key_slot

from contracts.job_state import F_HEAD, F_ORIGIN, Head, JobState, Origin, encode_state, job_key
from projector.replay import topic, verify
from projector.replay.drop import unlink_groups
from projector.replay.verify import Lag, Reservoir, Tally, call_groups, detail

NAMES = ("v1", "v2")
STATE = JobState(
    head=Head(3, "01JDQ8Z3M4W8K2V7T6R5N4P3E3", "RUNNING", "[]"),
    origin=Origin(1, "01JDQ8Z3M4W8K2V7T6R5N4P3E1", "ON_MODEL_RENDER", "2026-11-29T12:00:00Z"),
)


def test_a_reservoir_keeps_everything_up_to_its_size_then_exactly_its_size() -> None:
    small: Reservoir[int] = Reservoir(10)
    for item in range(7):
        small.offer(item)
    assert small.items == list(range(7))

    full: Reservoir[int] = Reservoir(10, random.Random(1))
    for item in range(10_000):
        full.offer(item)
    assert len(full.items) == 10
    assert len(set(full.items)) == 10
    assert full.seen == 10_000


def test_a_reservoir_draws_every_item_about_equally_often() -> None:
    rng = random.Random(7)
    drawn: Counter[int] = Counter()
    for _ in range(4000):
        reservoir: Reservoir[int] = Reservoir(2, rng)
        for item in range(10):
            reservoir.offer(item)
        drawn.update(reservoir.items)
    # Each of 10 items is expected 4000 * 2 / 10 = 800 times; first and last alike.
    assert all(700 < drawn[item] < 900 for item in range(10)), drawn


def test_calls_on_one_server_are_chunks_in_order() -> None:
    keys = [f"job:v1:{{acme:{n}}}" for n in range(1234)]
    groups = call_groups(keys, cluster=False)
    assert [index for group in groups for index in group] == list(range(1234))
    assert max(len(group) for group in groups) == verify.KEYS_PER_CALL


def test_calls_on_a_cluster_share_a_slot_and_keep_a_job_of_both_versions_together() -> None:
    refs = [("acme", f"job{n}") for n in range(300)]
    keys = [job_key("v1", *ref) for ref in refs] + [job_key("v2", *ref) for ref in refs]
    groups = call_groups(keys, cluster=True)
    assert sorted(index for group in groups for index in group) == list(range(600))
    for group in groups:
        assert len({key_slot(keys[i].encode()) for i in group}) == 1
    group_of = {index: n for n, group in enumerate(groups) for index in group}
    assert all(group_of[i] == group_of[i + 300] for i in range(300))


def test_unlinks_on_a_cluster_are_one_per_slot() -> None:
    keys = [job_key("v1", "acme", f"job{n}").encode() for n in range(200)]
    assert unlink_groups(keys, cluster=False) == [keys]
    groups = unlink_groups(keys, cluster=True)
    assert sorted(key for group in groups for key in group) == sorted(keys)
    assert all(len({key_slot(key) for key in group}) == 1 for group in groups)


def test_the_detail_of_decodable_jobs_is_field_by_field() -> None:
    assert STATE.head is not None
    changed = STATE._replace(head=STATE.head._replace(status="FAILED"))
    assert detail(encode_state(STATE), encode_state(changed), NAMES) == [
        "head.status: v1=RUNNING v2=FAILED"
    ]


def test_the_detail_falls_back_to_raw_fields_when_a_side_does_not_decode() -> None:
    fields = encode_state(STATE)
    broken = fields | {F_ORIGIN: "garbage"}
    lines = detail(fields, broken, NAMES)
    assert lines[0].startswith("a side does not decode: ")
    assert lines[1:] == [f"field o: v1={fields[F_ORIGIN]!r} v2='garbage'"]


def test_the_detail_names_an_encoding_difference_of_equal_states() -> None:
    fields = encode_state(STATE)
    padded = fields | {F_HEAD: "0" + fields[F_HEAD]}  # seq "03": the same number
    lines = detail(fields, padded, NAMES)
    assert lines == [
        "the stored values differ but decode to the same state",
        f"field h: v1={fields[F_HEAD]!r} v2={padded[F_HEAD]!r}",
    ]


def test_only_jobs_on_lagging_partitions_are_in_flight() -> None:
    jobs = [f"01JDQ8Z3M4W8K2V7T6R5N4P3{n:02d}" for n in range(40)]
    partition_of = {job: topic.partition_for_key(job.encode(), 4) for job in jobs}
    lag = Lag(4, frozenset({1}))
    for job in jobs:
        expected = 1 if partition_of[job] == 1 else None
        assert lag.partition_in_flight(job) == expected
    assert Lag(0, frozenset()).partition_in_flight(jobs[0]) is None


def test_the_tally_counts_missing_jobs_whether_in_flight_or_not() -> None:
    tally = Tally(compared=10, equal=7)
    tally.count(verify.MISSING_IN_A, in_flight=True)
    tally.count(verify.MISSING_IN_B, in_flight=False)
    tally.count(verify.FIELDS_DIFFER, in_flight=False)
    assert tally.summary(2.0) == (
        "10 jobs compared: 7 equal, 2 differing, 1 in flight "
        "(1 missing in A, 1 missing in B) in 2.0 s, 5 jobs/s"
    )

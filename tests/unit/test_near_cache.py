"""The near cache's rules, one by one (the race against a real Redis is in
tests/integration/test_near_cache.py)."""

from __future__ import annotations

import pytest

from api.near_cache import ENTRY_OVERHEAD_BYTES, RECENT_READS, NearCache

OLD = {b"h": b"1\x1fa\x1fQUEUED\x1f[]"}
NEW = {b"h": b"2\x1fb\x1fRUNNING\x1f[]"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cache_with_subscribed(*keys: str, clock: Clock | None = None) -> NearCache:
    cache = NearCache(1 << 20, max_age=1.0, clock=clock or Clock())
    for key in keys:
        cache.subscribed(key)
    return cache


def test_a_read_fills_only_a_subscribed_key_and_a_later_lookup_hits() -> None:
    cache = cache_with_subscribed("k")
    assert cache.lookup("k") is None
    cache.fill("k", cache.ticket("k"), OLD)
    assert cache.lookup("k") == OLD
    assert cache.ticket("other") is None, "not subscribed: nothing would tell of a change"
    cache.fill("other", cache.ticket("other"), OLD)
    assert cache.lookup("other") is None


def test_a_change_announced_during_a_read_keeps_the_read_out() -> None:
    cache = cache_with_subscribed("k")
    ticket = cache.ticket("k")  # the read is sent
    cache.changed("k", NEW)  # the announcement overtakes its reply
    cache.fill("k", ticket, OLD)  # the reply: older than the announcement
    assert cache.lookup("k") == NEW


def test_an_announcement_without_fields_drops_the_job_and_spoils_reads_in_flight() -> None:
    cache = cache_with_subscribed("k")
    cache.fill("k", cache.ticket("k"), OLD)
    ticket = cache.ticket("k")
    cache.changed("k", None)
    assert cache.lookup("k") is None
    cache.fill("k", ticket, OLD)
    assert cache.lookup("k") is None


def test_a_flush_or_a_new_subscription_spoils_every_ticket_taken_before() -> None:
    cache = cache_with_subscribed("k", "j")
    before = cache.ticket("k")
    cache.flush()  # the subscriber's connection broke
    cache.subscribed("k")
    cache.fill("k", before, OLD)
    assert cache.lookup("k") is None

    before = cache.ticket("k")
    cache.unsubscribed("k")
    cache.subscribed("k")  # changes between the two went unannounced
    cache.fill("k", before, OLD)
    assert cache.lookup("k") is None


def test_a_channel_confirmed_twice_is_a_reconnect_and_empties_the_cache() -> None:
    cache = cache_with_subscribed("k", "j")
    cache.fill("k", cache.ticket("k"), OLD)
    cache.fill("j", cache.ticket("j"), OLD)
    cache.subscribed("j")  # redis-py subscribed it again after a reconnect
    assert (cache.lookup("k"), cache.lookup("j")) == (None, None)
    assert cache.ticket("k") is None, "k is not known to be subscribed until confirmed again"
    assert cache.flushes == 1


def test_an_unsubscribed_key_is_dropped_and_its_announcements_ignored() -> None:
    cache = cache_with_subscribed("k")
    cache.fill("k", cache.ticket("k"), OLD)
    cache.unsubscribed("k")
    assert cache.lookup("k") is None
    cache.changed("k", NEW)
    assert cache.lookup("k") is None


def test_an_entry_older_than_the_maximum_age_is_read_again() -> None:
    clock = Clock()
    cache = cache_with_subscribed("k", clock=clock)
    cache.fill("k", cache.ticket("k"), OLD)
    clock.now += 0.99
    assert cache.lookup("k") == OLD
    clock.now += 0.02
    assert cache.lookup("k") is None


def test_a_key_read_twice_among_the_recent_reads_is_kept_subscribed_and_evictions_release() -> None:
    kept: list[str] = []
    released: list[str] = []
    entry = ENTRY_OVERHEAD_BYTES + len(b"h") + len(OLD[b"h"])
    cache = NearCache(2 * entry, 1.0, keep=kept.append, release=released.append)
    cache.lookup("hot")
    assert kept == []
    cache.lookup("hot")
    assert kept == ["hot"]
    cache.lookup("hot")
    assert kept == ["hot"], "asked once"
    for n in range(RECENT_READS + 1):  # many keys read once each: none is hot
        cache.lookup(f"cold{n}")
    assert kept == ["hot"]
    assert released == []

    for key in ("a", "b", "c"):  # bounded in bytes: the least recently used goes
        cache.subscribed(key)
        cache.fill(key, cache.ticket(key), OLD)
    assert cache.size_bytes <= 2 * entry
    assert [cache.lookup(key) for key in ("a", "b", "c")] == [None, OLD, OLD]


def test_a_channel_the_notifier_could_not_keep_is_asked_for_again() -> None:
    kept: list[str] = []
    cache = NearCache(1 << 20, 1.0, keep=kept.append)
    cache.lookup("hot")
    cache.lookup("hot")
    cache.not_kept("hot")  # Redis was away
    cache.lookup("hot")
    cache.lookup("hot")
    assert kept == ["hot", "hot"]


def test_a_kept_channel_is_let_go_once_its_job_is_not_read_for_a_while() -> None:
    from api.near_cache import KEPT_IDLE_SECONDS

    clock = Clock()
    kept: list[str] = []
    released: list[str] = []
    cache = NearCache(1 << 20, 1.0, keep=kept.append, release=released.append, clock=clock)
    for key in ("a", "a", "b", "b"):
        cache.lookup(key)
    assert kept == ["a", "b"]
    for _ in range(2):  # b is read again and again; a is not
        clock.now += KEPT_IDLE_SECONDS / 2
        cache.lookup("b")
    assert released == [], "a was last read KEPT_IDLE_SECONDS ago: not longer"
    clock.now += KEPT_IDLE_SECONDS / 2
    cache.lookup("b")
    assert released == ["a"], "a was not read for longer than KEPT_IDLE_SECONDS; b was"


def test_the_channels_kept_are_bounded_and_each_one_let_go_is_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import api.near_cache

    monkeypatch.setattr(api.near_cache, "MAX_KEPT_CHANNELS", 3)
    kept: list[str] = []
    released: list[str] = []
    cache = NearCache(1 << 20, 1.0, keep=kept.append, release=released.append)
    for key in ("a", "b", "c", "d", "e"):
        cache.lookup(key)
        cache.lookup(key)
    assert kept == ["a", "b", "c", "d", "e"]
    assert released == ["a", "b"]

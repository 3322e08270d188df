"""`contracts.pauses`: garbage-collection pauses and event-loop lag, reported by callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

import pytest

from contracts.pauses import watch_gc, watch_loop_lag


def test_every_collection_is_reported_with_its_generation_until_unwatched() -> None:
    pauses: list[tuple[float, int]] = []
    unwatch = watch_gc(lambda seconds, generation: pauses.append((seconds, generation)))
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        unwatch()
    assert [generation for _, generation in pauses][-2:] == [0, 2]
    assert all(seconds >= 0 for seconds, _ in pauses)
    seen = len(pauses)
    gc.collect()
    assert len(pauses) == seen
    unwatch()  # twice is harmless


def test_a_pause_is_timed_from_the_collection_s_start_to_its_stop() -> None:
    """Another callback that takes 30 ms at the start (run after ours) holds the collection:
    the pause reported covers it."""
    pauses: list[float] = []

    def slow(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            time.sleep(0.03)

    unwatch = watch_gc(lambda seconds, generation: pauses.append(seconds))
    gc.callbacks.append(slow)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(slow)
        unwatch()
    assert pauses
    assert pauses[-1] >= 0.03


def test_a_watch_that_starts_during_a_collection_skips_its_end() -> None:
    """A stop phase without a start seen (the watch began inside a collection: here in the
    stop phase, which CPython then hands to the new callback too) is not a pause of unknown
    length."""
    pauses: list[float] = []
    unwatch: list[Any] = []

    def subscribe_mid_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and not unwatch:
            unwatch.append(watch_gc(lambda seconds, generation: pauses.append(seconds)))

    gc.callbacks.append(subscribe_mid_collection)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(subscribe_mid_collection)
    try:
        assert pauses == []
        gc.collect()
        assert len(pauses) == 1
    finally:
        unwatch[0]()


async def test_a_blocked_loop_is_reported_late_by_about_the_block() -> None:
    lags: list[float] = []
    watcher = asyncio.create_task(watch_loop_lag(lags.append, interval=0.01))
    try:
        while len(lags) < 3:
            await asyncio.sleep(0.01)
        time.sleep(0.1)  # noqa: ASYNC251 - the stall being measured
        seen = len(lags)
        while len(lags) == seen:
            await asyncio.sleep(0.01)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    assert all(lag >= 0 for lag in lags)
    assert max(lags) >= 0.08  # 0.1 s blocked, less the part of the 10 ms sleep it covered
    assert watcher.cancelled()


async def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        await watch_loop_lag(lambda lag: None, interval=0)

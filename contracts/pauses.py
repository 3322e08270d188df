"""Pauses of a process, measured: garbage collections and a late event loop.

Two watchers, standard library only, that report through callbacks (the processes turn them
into Prometheus histograms):

- `watch_gc(on_pause)` calls `on_pause(seconds, generation)` after every collection of the
  cyclic garbage collector, with how long it held the interpreter (`gc.callbacks`' start and
  stop phases, timed with `time.perf_counter`). It returns the call that stops the watch.
- `watch_loop_lag(on_lag, interval)` runs until cancelled: it sleeps `interval` seconds on the
  running event loop and calls `on_lag(seconds)` with how late it woke. A loop that is busy
  (a long callback, a collection, a CPU the process does not get) wakes it late, and every
  other timer and socket read of that loop waited as long.

`on_pause` runs inside the collection's stop callback, in the thread that collected: keep it
short and do not raise (an exception there is only reported by `sys.unraisablehook`).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

# How often `watch_loop_lag` looks by default: 20 looks a second cost next to nothing and
# catch every stall longer than the interval.
LOOP_LAG_INTERVAL = 0.05


def watch_gc(on_pause: Callable[[float, int], None]) -> Callable[[], None]:
    """Call `on_pause(seconds, generation)` after each garbage collection until the returned
    function is called. Collections do not nest, so one start time is enough."""
    started: list[float] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:  # "stop" (a watch that began mid-collection has no start)
            seconds = time.perf_counter() - started.pop()
            on_pause(seconds, int(info.get("generation", -1)))

    gc.callbacks.append(callback)

    def unwatch() -> None:
        if callback in gc.callbacks:
            gc.callbacks.remove(callback)

    return unwatch


async def watch_loop_lag(
    on_lag: Callable[[float], None], interval: float = LOOP_LAG_INTERVAL
) -> None:
    """Sleep `interval` s, again and again, and call `on_lag(seconds)` with how much later
    than asked each sleep ended (0 or more; the loop's own timer granularity, about a
    millisecond with epoll, is part of it). Runs until cancelled."""
    if interval <= 0:
        raise ValueError(f"interval must be positive, not {interval}")
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        on_lag(max(0.0, loop.time() - due))

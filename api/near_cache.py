"""Stored jobs kept in the api process, so that reads of a hot job need no Redis round trip.

A poller reads the same job many times between its changes; a round trip to Redis per read
would be most of a read's tail. This cache keeps a job's stored fields while
the process is subscribed to the job's change channel (`api.notifier`), and only then:

- every merge announces the job's new groups on that channel (`projector/jobs.lua`), and the
  announcement replaces the cached fields: a reader woken by it answers without a read;
- a read may fill the cache only with a ticket taken before it was sent, while the channel was
  confirmed subscribed; a change announced in between (or an unsubscribe, or a lost
  subscriber) invalidates the ticket, so an older reply never overwrites a newer state;
- whenever the subscriber's connection breaks or is made again (a channel confirmed twice
  means redis-py subscribed it again after a reconnect), everything is dropped: changes may
  have gone unannounced meanwhile;
- an entry older than `max_age` is read again: the backstop for what no announcement covers
  (a key expiring under JOB_RETENTION_SECONDS, a write by hand).

So a read that starts after the api was told of a change never answers the state before it.

Which jobs are kept: those someone waits on (their channel is subscribed for the long-poll)
and those read twice within the last RECENT_READS reads (a hot job, for which the cache asks
the notifier to keep its channel subscribed until the job has not been read for
KEPT_IDLE_SECONDS). A job read once in a while costs nothing beyond
remembering its key among the recent ones: reading many jobs in turn is no slower than
without the cache. Bounded in bytes (least recently used first) and in channels kept.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache

# What an entry costs beside its values: the key, the dict of fields and the entry, roughly.
ENTRY_OVERHEAD_BYTES = 400
# How many of the latest reads' jobs are remembered to tell a hot job from a cold one.
RECENT_READS = 4096
# Channels the cache keeps subscribed for hot jobs, at most, and how long one is kept after
# its job was last read.
MAX_KEPT_CHANNELS = 10_000
KEPT_IDLE_SECONDS = 60.0

Fields = dict[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a fill must still find: the same subscription of the key, no change announced
    since, no flush since."""

    generation: int
    subscription: int
    changes: int


@dataclass(slots=True)
class _Channel:
    subscription: int  # tells a subscription from a later one of the same channel
    changes: int = 0


@dataclass(frozen=True, slots=True)
class _Entry:
    fields: Fields
    stored_at: float


def _size(entry: _Entry) -> int:
    return ENTRY_OVERHEAD_BYTES + sum(len(k) + len(v) for k, v in entry.fields.items())


class NearCache:
    def __init__(
        self,
        max_bytes: int,
        max_age: float,
        keep: Callable[[str], None] = lambda key: None,
        release: Callable[[str], None] = lambda key: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`keep(key)` asks for the key's channel to be subscribed (a hot job) and
        `release(key)` lets it go; both return at once (the notifier works in the
        background)."""
        self.max_age = max_age
        self._entries: LRUCache[str, _Entry] = LRUCache(max(1, max_bytes), getsizeof=_size)
        self._channels: dict[str, _Channel] = {}
        self._recent: LRUCache[str, None] = LRUCache(RECENT_READS)
        # Hot jobs whose channel is kept, by when they were last read, least recent first.
        self._kept: OrderedDict[str, float] = OrderedDict()
        self._keep, self._release = keep, release
        self._clock = clock
        self._generation = 0
        self._subscriptions = itertools.count(1)
        self.hits = self.misses = self.flushes = 0

    # --- reads ------------------------------------------------------------------------------

    def lookup(self, key: str) -> Fields | None:
        """The job's fields when cached and fresh enough; None: read it."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and now - entry.stored_at < self.max_age:
            self.hits += 1
            if key in self._kept:
                self._kept[key] = now
                self._kept.move_to_end(key)
            return entry.fields
        self.misses += 1
        self._note_read(key, now)
        return None

    def ticket(self, key: str) -> Ticket | None:
        """Taken before a read is sent; None when the read cannot be cached (the key's channel
        is not confirmed subscribed)."""
        channel = self._channels.get(key)
        if channel is None:
            return None
        return Ticket(self._generation, channel.subscription, channel.changes)

    def fill(self, key: str, ticket: Ticket | None, fields: Fields) -> None:
        """Keep what a read answered, if nothing was announced since its ticket."""
        if ticket is None or ticket.generation != self._generation:
            return
        channel = self._channels.get(key)
        if (
            channel is None
            or channel.subscription != ticket.subscription
            or channel.changes != ticket.changes
        ):
            return
        self._store(key, fields)

    def _note_read(self, key: str, now: float) -> None:
        """A key read twice among the last RECENT_READS reads is hot: keep its channel. Each
        read also lets go of the least recently read kept channel if it has been idle for
        KEPT_IDLE_SECONDS (one at a time: the cost of a read stays constant)."""
        if self._kept:
            oldest = next(iter(self._kept))
            if oldest != key and now - self._kept[oldest] > KEPT_IDLE_SECONDS:
                del self._kept[oldest]
                self._release(oldest)
        if key in self._kept:
            self._kept[key] = now
            self._kept.move_to_end(key)
            return
        if key not in self._recent:
            self._recent[key] = None
            return
        del self._recent[key]
        self._kept[key] = now
        if len(self._kept) > MAX_KEPT_CHANNELS:
            cold, _ = self._kept.popitem(last=False)
            self._release(cold)
        self._keep(key)

    def _store(self, key: str, fields: Fields) -> None:
        entry = _Entry(fields, self._clock())
        if _size(entry) <= self._entries.maxsize:
            self._entries[key] = entry

    # --- the notifier's side ----------------------------------------------------------------

    def not_kept(self, key: str) -> None:
        """The notifier could not keep the key's channel (Redis away): a later read of the
        job may ask again."""
        self._kept.pop(key, None)

    def subscribed(self, key: str) -> None:
        """The server confirmed the key's channel. A confirmation of a channel already
        subscribed is redis-py subscribing again after a reconnect: changes may have been
        lost meanwhile, so everything goes."""
        if key in self._channels:
            self.flush()
        self._channels[key] = _Channel(next(self._subscriptions))

    def unsubscribed(self, key: str) -> None:
        """Called before the channel is unsubscribed: from now on no change would reach us."""
        self._channels.pop(key, None)
        self._entries.pop(key, None)

    def changed(self, key: str, fields: Fields | None) -> None:
        """A change announced on the key's channel, with the job's fields (None: an
        announcement without them, from an older release: the job is read again)."""
        channel = self._channels.get(key)
        if channel is None:
            return
        channel.changes += 1
        if fields is None:
            self._entries.pop(key, None)
        else:
            self._store(key, fields)

    def flush(self) -> None:
        """The subscriber's connection broke or was made again: nothing cached is known to be
        current any more, and no read in flight may fill."""
        self._generation += 1
        self._channels.clear()
        self._entries.clear()
        self.flushes += 1

    # --- for metrics ------------------------------------------------------------------------

    @property
    def size_bytes(self) -> float:
        return self._entries.currsize

    def __len__(self) -> int:
        return len(self._entries)

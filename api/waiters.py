"""How many long-polls a process holds at once (CONTRACT §3): `API_MAX_WAITERS` in all and
`API_MAX_WAITERS_PER_TENANT` for one tenant. A poll beyond either is answered 429 with
`Retry-After` at once, instead of holding a connection and a subscription the process may not
have; one tenant's pollers cannot take every place."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class TooManyWaiters(Exception):
    """Answered 429 TOO_MANY_REQUESTS with Retry-After."""


class WaiterLimits:
    def __init__(
        self, total: int, per_tenant: int, on_change: Callable[[int], None] | None = None
    ) -> None:
        self.total = total
        self.per_tenant = per_tenant
        self._on_change = on_change  # told the number held after each change (a gauge)
        self._held = 0
        self._by_tenant: Counter[str] = Counter()

    @property
    def held(self) -> int:
        return self._held

    @contextmanager
    def hold(self, tenant_id: str) -> Iterator[None]:
        """A place for one long-poll of `tenant_id` while the block runs; TooManyWaiters
        when there is none."""
        if self._held >= self.total or self._by_tenant[tenant_id] >= self.per_tenant:
            raise TooManyWaiters()
        self._held += 1
        self._by_tenant[tenant_id] += 1
        self._changed()
        try:
            yield
        finally:
            self._held -= 1
            self._by_tenant[tenant_id] -= 1
            if not self._by_tenant[tenant_id]:
                del self._by_tenant[tenant_id]
            self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self._held)

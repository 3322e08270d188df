"""Long-polls held at once are capped in all and per tenant (CONTRACT §3)."""

from __future__ import annotations

import contextlib

import pytest

from api.waiters import TooManyWaiters, WaiterLimits


def test_a_poll_beyond_the_tenants_places_is_refused_and_a_place_comes_back_when_freed() -> None:
    limits = WaiterLimits(total=10, per_tenant=2)
    with contextlib.ExitStack() as held:
        held.enter_context(limits.hold("acme"))
        held.enter_context(limits.hold("acme"))
        with pytest.raises(TooManyWaiters), limits.hold("acme"):
            pass
        with limits.hold("globex"):  # another tenant still has places
            assert limits.held == 3
    assert limits.held == 0
    with limits.hold("acme"):
        assert limits.held == 1


def test_a_poll_beyond_the_process_places_is_refused_whatever_its_tenant() -> None:
    limits = WaiterLimits(total=2, per_tenant=2)
    with limits.hold("a"), limits.hold("b"), pytest.raises(TooManyWaiters), limits.hold("c"):
        pass
    assert limits.held == 0

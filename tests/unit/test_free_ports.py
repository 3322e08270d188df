"""The local stack's ports: chosen where no outgoing connection can take them first."""

from __future__ import annotations

from devstack.processes import LOWEST_PORT, ephemeral_start, free_port


def test_free_ports_are_outside_the_ephemeral_range_and_never_handed_out_twice() -> None:
    """A port from the ephemeral range can become an outgoing connection's source port before
    its server listens ("Address already in use" at random)."""
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(LOWEST_PORT <= port < ephemeral_start() for port in ports)

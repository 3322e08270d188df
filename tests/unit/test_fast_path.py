"""Which queries the api's fast path takes itself; every other one goes to FastAPI's route."""

from __future__ import annotations

import pytest

from api.fast_path import poll_parameters


@pytest.mark.parametrize(
    ("query", "taken"),
    [
        (b"", (0.0, 0)),
        (b"wait=5", (5.0, 0)),
        (b"after_seq=12", (0.0, 12)),
        (b"wait=0.25&after_seq=3", (0.25, 3)),
        (b"after_seq=3&wait=25", (25.0, 3)),
        (b"wait=25.000001", None),  # beyond the route's bound: its 422
        (b"wait=26", None),
        (b"wait=-1", None),
        (b"wait=1e1", None),  # the route parses this form; the fast path does not try
        (b"wait=nan", None),
        (b"wait=", None),
        (b"wait", None),
        (b"after_seq=-1", None),
        (b"after_seq=1.5", None),
        (b"after_seq=" + b"9" * 19, None),
        (b"wait=1&wait=2", None),  # repeated: the route decides which counts
        (b"wait=1&", None),
        (b"other=1", None),
        (b"wait=1&other=1", None),
        (b"wait=%31", None),  # percent-encoded: left to the route's decoding
    ],
)
def test_only_plain_wait_and_after_seq_are_taken(
    query: bytes, taken: tuple[float, int] | None
) -> None:
    assert poll_parameters(query) == taken

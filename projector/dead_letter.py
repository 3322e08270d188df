"""Dead letters: a poison record's original key and bytes, plus why and where it came from."""

from __future__ import annotations

from pydantic import ValidationError

MAX_REASON_CHARS = 500


def poison_reason(error: ValidationError) -> str:
    """One human-readable line naming the broken fields, e.g. `seq: Input should be ...`."""
    parts = []
    for item in error.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "value"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - 3
    if more > 0:
        parts.append(f"and {more} more")
    return one_line("; ".join(parts))


def one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def dead_letter_headers(
    reason: str, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    return [
        ("dlq.reason", reason.encode()),
        ("dlq.topic", topic.encode()),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(offset).encode()),
    ]

"""A readable, field-by-field difference between two stored states of one job."""

from __future__ import annotations

import json
from typing import Any

from contracts.job_state import JobState, Public, decode_stored_event

MAX_VALUE_CHARS = 200


def _fields(group: Any) -> dict[str, Any]:
    """A group's fields by name; the public event is opened into its own fields."""
    if group is None:
        return {}
    if isinstance(group, Public):
        event = decode_stored_event(group.event_json)
        opened = {"seq": group.seq, "event_id": group.event_id}
        for name, value in event._asdict().items():
            if name == "artifacts":
                value = [artifact.model_dump() for artifact in value]
            opened[name] = value
        return opened
    fields: dict[str, Any] = group._asdict()
    return fields


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def differences(left: JobState, right: JobState, names: tuple[str, str] = ("A", "B")) -> list[str]:
    """One line per differing field, e.g. `head.status: A=RUNNING B=SUCCEEDED`; a group
    present on one side only is one line. Empty when the states are equal."""
    lines: list[str] = []
    for group, a, b in (
        ("head", left.head, right.head),
        ("origin", left.origin, right.origin),
        ("public", left.public, right.public),
    ):
        if a == b:
            continue
        if a is None or b is None:
            missing = names[0] if a is None else names[1]
            lines.append(f"{group}: absent in {missing}")
            continue
        fa, fb = _fields(a), _fields(b)
        for name in fa:
            if fa[name] != fb.get(name):
                shown_a, shown_b = _shown(fa[name]), _shown(fb.get(name))
                lines.append(f"{group}.{name}: {names[0]}={shown_a} {names[1]}={shown_b}")
    return lines

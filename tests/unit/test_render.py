"""Rendering a stored job into the response body, and the cache of rendered bodies."""

from __future__ import annotations

import json

from api.render import ENTRY_OVERHEAD_BYTES, BodyCache, body_key, is_complete, render_job
from contracts.job_state import encode_state, stored_seq
from devstack.data import event
from projector.fold import fold


def stored(*events_: object) -> dict[bytes, bytes]:
    state = fold(events_)  # type: ignore[arg-type]
    return {k.encode(): v.encode() for k, v in encode_state(state).items()}


ART = {"bucket": "renders", "key": "a/b c.png", "kind": "on_model_render", "role": "final"}


def head_seq(fields: dict[bytes, bytes]) -> int:
    return stored_seq(fields.get(b"h"))


def public_seq(fields: dict[bytes, bytes]) -> int:
    return stored_seq(fields.get(b"p"))


def sign(bucket: str, key: str) -> str:
    return f"https://signed/{bucket}/{key}"


def test_a_rendered_job_carries_urls_and_no_storage_reference() -> None:
    fields = stored(event(seq=1), event(seq=2, kind="succeeded", artifacts=[ART]))
    body = json.loads(render_job("01JDQ8Z3M4W8K2V7T6R5N4P3Q2", fields, sign))
    assert body["manifest"] == [
        {
            "image_url": "https://signed/renders/a/b c.png",
            "kind": "on_model_render",
            "role": "final",
            "metadata": {},
        }
    ]
    assert body["latest_event"]["artifacts"] == body["manifest"]
    assert "bucket" not in json.dumps(body)
    assert '"key"' not in json.dumps(body)
    assert (head_seq(fields), public_seq(fields)) == (2, 2)


def test_a_job_without_its_head_is_not_complete() -> None:
    assert not is_complete({})
    assert is_complete(stored(event(seq=1)))
    assert public_seq(stored(event(seq=1))) == 0


def test_the_body_cache_key_changes_with_the_job_the_time_bucket_the_credentials_and_tenant() -> (
    None
):
    before = stored(event(seq=1))
    after = stored(event(seq=1), event(seq=2, kind="queued"))
    assert body_key("acme", "J", before, 60, "key-a") != body_key("acme", "J", after, 60, "key-a")
    assert body_key("acme", "J", before, 60, "key-a") != body_key("acme", "J", before, 120, "key-a")
    assert body_key("acme", "J", before, 60, "key-a") != body_key("acme", "J", before, 60, "key-b")
    assert body_key("acme", "J", before, 60, "key-a") == body_key(
        "acme", "J", dict(before), 60, "key-a"
    )
    assert body_key("acme", "J", before, 60, "key-a") != body_key("evil", "J", before, 60, "key-a")


def test_the_body_cache_is_bounded_in_bytes_and_drops_the_oldest_body() -> None:
    entry = ENTRY_OVERHEAD_BYTES + 100
    cache = BodyCache(max_bytes=2 * entry)
    assert cache.get("a") is None
    cache.put("a", b"1" * 100)
    cache.put("b", b"2" * 100)
    assert cache.size_bytes == 2 * entry
    cache.put("c", b"3" * 100)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (
        None,
        b"2" * 100,
        b"3" * 100,
    )
    cache.put("huge", b"x" * 3 * entry)  # larger than the whole cache: not kept
    assert cache.get("huge") is None


def test_the_fields_digest_tells_apart_a_same_seq_replacement() -> None:
    from api.render import fields_digest

    lower = stored(event(seq=2, kind="stage", event_id="01AAAAAAAAAAAAAAAAAAAAAAAA"))
    greater = stored(event(seq=2, kind="failed", event_id="01BBBBBBBBBBBBBBBBBBBBBBBB"))
    assert head_seq(lower) == head_seq(greater)
    assert fields_digest(lower) != fields_digest(greater)


def test_the_stored_latest_event_has_the_declared_stored_shape() -> None:
    from contracts.job_state import decode_state, decode_stored_event

    fields = stored(event(seq=1), event(seq=2, kind="succeeded", artifacts=[ART]))
    public = decode_state({k.decode(): v.decode() for k, v in fields.items()}).public
    assert public is not None
    assert decode_stored_event(public.event_json).artifacts[0].key == "a/b c.png"

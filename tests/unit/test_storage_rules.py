"""Storage references are a trust boundary (CONTRACT §1): what a tenant's events may name."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord

from contracts.publisher import encode_event
from contracts.storage import StorageRules
from devstack.data import event
from projector.intake import Poison, Record, parse

RULES = StorageRules.of(["renders", "thumbs"], "tenants/{tenant_id}/")


@pytest.mark.parametrize(
    ("tenant", "bucket", "key", "refused"),
    [
        ("acme", "renders", "tenants/acme/j/final.png", None),
        ("acme", "thumbs", "tenants/acme/x", None),
        ("evil", "renders", "t/acme/secret/final.png", "key must start with 'tenants/evil/'"),
        ("evil", "renders", "tenants/acme/secret.png", "key must start with 'tenants/evil/'"),
        ("evil", "prod-backups", "tenants/evil/x", "bucket 'prod-backups' is not one of"),
        ("evil", "renders", "tenants/evil/../acme/secret.png", "no '.' or '..' path segment"),
        ("evil", "renders", "tenants/evil/./x", "no '.' or '..' path segment"),
        ("acme", "renders", "tenants/acmecorp/x", "key must start with 'tenants/acme/'"),
    ],
)
def test_a_tenant_may_name_only_its_own_storage(
    tenant: str, bucket: str, key: str, refused: str | None
) -> None:
    refusal = RULES.refusal(tenant, bucket, key)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert refused in refusal


def test_without_a_prefix_only_the_bucket_is_checked() -> None:
    rules = StorageRules.of(["renders"])
    assert rules.refusal("evil", "renders", "anything/../at/all") is None
    assert rules.refusal("evil", "other", "x") is not None


def test_a_prefix_template_must_name_the_tenant_once() -> None:
    for bad in ("tenants/", "{tenant_id}/{tenant_id}/", "t/{tenant}/", "tenants/{tenant_id}"):
        with pytest.raises(ValueError, match=r"\{tenant_id\}|end with"):
            StorageRules.of(["renders"], bad)


def record(value: bytes) -> Record:
    return ConsumerRecord("jobs", 0, 7, 0, 0, b"k", value, None, 1, len(value), [])


def artifact(bucket: str, key: str) -> dict[str, str]:
    return {"bucket": bucket, "key": key, "kind": "on_model_render", "role": "final"}


@pytest.mark.parametrize(
    ("bucket", "key", "reason"),
    [
        ("renders", "t/acme/secret/final.png", "artifacts.1: key must start with 'tenants/evil/'"),
        ("prod-backups", "tenants/evil/x.png", "artifacts.1: bucket 'prod-backups' is not one"),
    ],
)
def test_an_event_naming_another_tenants_storage_is_poison(
    bucket: str, key: str, reason: str
) -> None:
    mine = artifact("renders", "tenants/evil/ok.png")
    stolen = event(
        tenant_id="evil", seq=3, kind="succeeded", artifacts=[mine, artifact(bucket, key)]
    )
    parsed = parse(record(encode_event(stolen)), RULES)
    assert isinstance(parsed, Poison)
    assert parsed.reason.startswith(reason)


def test_an_event_inside_the_rules_is_parsed() -> None:
    fine = event(
        tenant_id="acme",
        seq=3,
        kind="succeeded",
        artifacts=[artifact("renders", "tenants/acme/a.png")],
    )
    parsed = parse(record(encode_event(fine)), RULES)
    assert not isinstance(parsed, Poison)
    assert parsed["artifacts"][0].key == "tenants/acme/a.png"

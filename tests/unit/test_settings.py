"""Bad configuration is one line naming the setting, never a traceback."""

from __future__ import annotations

import pytest

from api.settings import ApiSettings
from contracts.settings import load_or_exit, redact
from projector.settings import ProjectorSettings


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("REDIS_URL", "localhost:6379", "must start with redis://"),
        ("REDIS_URL", "redis://:6379/0", "names no host"),
        ("REDIS_URL", "redis://localhost:port/0", "port that is not a number"),
        ("REDIS_URL", "redis://localhost:6379/zero", "database that is not a number"),
        ("KAFKA_BOOTSTRAP_SERVERS", "kafka", "host:port"),
        ("PROJECTION_VERSION", "v 2", "letters, digits"),
        ("BATCH_MAX_RECORDS", "0", "greater than or equal to 1"),
    ],
)
def test_a_bad_projector_setting_stops_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    says: str,
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        load_or_exit(ProjectorSettings)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"configuration error: {name}: ")
    assert says in err


def test_the_api_needs_exactly_one_token_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.delenv("JWT_PUBLIC_KEY", raising=False)
    with pytest.raises(SystemExit):
        load_or_exit(ApiSettings)
    assert "JWT_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("JWT_SECRET", "s")
    assert load_or_exit(ApiSettings).jwt_secret is not None


def test_the_group_and_dead_letter_topic_follow_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_GROUP_ID", "readers")
    monkeypatch.setenv("PROJECTION_VERSION", "v7")
    monkeypatch.setenv("KAFKA_TOPIC", "events")
    settings = ProjectorSettings()
    assert (settings.group_id, settings.dlq_topic) == ("readers.v7", "events.dlq")


def test_passwords_are_redacted_from_urls() -> None:
    assert redact("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact("redis://user:hunter2@cache:6379/0") == "redis://user:***@cache:6379/0"
    assert redact("redis://cache:6379/0") == "redis://cache:6379/0"

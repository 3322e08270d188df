"""Bad configuration is one line naming the setting, never a traceback."""

from __future__ import annotations

import pytest

from api.settings import ApiSettings
from contracts.settings import load_or_exit, redact
from projector.settings import ProjectorSettings

SECRET_OF_32_BYTES = "0123456789abcdef0123456789abcdef"  # noqa: S105 - a test key


@pytest.fixture(autouse=True)
def storage_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process needs ARTIFACT_BUCKETS; the tests below break one other setting."""
    monkeypatch.setenv("ARTIFACT_BUCKETS", "renders")


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
        ("ARTIFACT_BUCKETS", "", "at least 1 character"),
        ("ARTIFACT_BUCKETS", " , ", "name at least one bucket"),
        ("ARTIFACT_KEY_PREFIX", "tenants/", "must hold {tenant_id} once"),
        ("ARTIFACT_KEY_PREFIX", "tenants/{tenant_id}", "must end with '/'"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS", "PLAINTEXT"),
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


def test_the_api_needs_one_kind_of_token_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        load_or_exit(ApiSettings)
    assert "JWT_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("JWT_SECRET", SECRET_OF_32_BYTES)
    assert load_or_exit(ApiSettings).jwt_secret is not None
    monkeypatch.setenv("JWT_JWKS_URL", "https://idp.example/.well-known/jwks.json")
    with pytest.raises(SystemExit):
        load_or_exit(ApiSettings)  # an HMAC secret and public keys: not both kinds
    assert "not both kinds" in capsys.readouterr().err


def test_an_hs256_secret_under_32_bytes_stops_the_api(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JWT_SECRET", "short")
    with pytest.raises(SystemExit) as stopped:
        load_or_exit(ApiSettings)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "JWT_SECRET must be at least 32 bytes" in err
    assert "short" not in err


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "SASL_SSL needs KAFKA_SASL_MECHANISM"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN"},
            "needs KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD",
        ),
        ({"KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_* given"),
        ({"KAFKA_SSL_CAFILE": __file__}, "KAFKA_SSL_* given"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/no/such/ca.pem"}, "no such file"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": __file__}, "go together"),
    ],
)
def test_an_incomplete_kafka_security_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: dict[str, str],
    says: str,
) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        load_or_exit(ProjectorSettings)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert says in err


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


@pytest.mark.parametrize(
    "url",
    ["http://idp.example/.well-known/jwks.json", "ftp://idp.example/jwks", "https:///jwks"],
)
def test_a_jwks_url_that_could_be_altered_in_transit_stops_the_api(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.setenv("JWT_JWKS_URL", url)
    with pytest.raises(SystemExit):
        load_or_exit(ApiSettings)
    assert "JWT_JWKS_URL must be an https:// URL" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["https://idp.example/jwks", "http://127.0.0.1:8080/jwks"])
def test_a_jwks_url_over_https_or_on_loopback_is_accepted(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.setenv("JWT_JWKS_URL", url)
    assert load_or_exit(ApiSettings).jwt_jwks_url == url

"""Every Kafka client gets the same security options from the settings (CONTRACT §4).

SASL is tested here, at the level of the client settings: the local broker keeps no SCRAM
users (FIELD-NOTES), so a SASL login cannot be shown end to end on this machine. TLS is shown
end to end in tests/integration/test_transport_security.py.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faststream.kafka.security import parse_security
from pydantic import SecretStr

from contracts.kafka import KafkaSecurity
from projector.kafka.security import faststream_security
from tests.tls import TestCa

PASSWORD = SecretStr("a-test-password")


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestCa(tmp_path, "kafka")


def cases(ca: TestCa) -> list[KafkaSecurity]:
    client = ca.issue("client", server=False)
    return [
        KafkaSecurity(),
        KafkaSecurity(protocol="SSL", ssl_cafile=ca.cafile),
        KafkaSecurity(
            protocol="SSL",
            ssl_cafile=ca.cafile,
            ssl_certfile=client.certfile,
            ssl_keyfile=client.keyfile,
        ),
        KafkaSecurity(
            protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="svc",
            sasl_password=PASSWORD,
        ),
        KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="svc",
            sasl_password=PASSWORD,
            ssl_cafile=ca.cafile,
        ),
        KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="svc",
            sasl_password=PASSWORD,
        ),
    ]


def comparable(options: dict[str, object]) -> dict[str, object]:
    """The options without the TLS context object, which is compared apart."""
    return {k: v for k, v in options.items() if k != "ssl_context" and v is not None}


def test_the_consumer_of_faststream_gets_the_options_of_every_other_client(ca: TestCa) -> None:
    for security in cases(ca):
        ours = security.client_options()
        theirs = parse_security(faststream_security(security))
        assert comparable(theirs) == comparable(ours) or (
            security.protocol == "PLAINTEXT" and theirs == {}
        ), security.protocol
        assert ("ssl_context" in ours) == security.uses_tls
        if security.uses_tls:
            assert isinstance(theirs["ssl_context"], ssl.SSLContext)


def test_tls_verifies_the_broker_and_its_name(ca: TestCa) -> None:
    context = KafkaSecurity(protocol="SSL", ssl_cafile=ca.cafile).ssl_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_sasl_credentials_reach_the_client_and_never_its_repr() -> None:
    security = KafkaSecurity(
        protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="svc",
        sasl_password=SecretStr("not-in-logs"),
    )
    assert security.client_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "not-in-logs",
    }
    assert "not-in-logs" not in repr(security)

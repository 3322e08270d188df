"""The contract's Kafka security (`contracts.kafka.KafkaSecurity`) as FastStream takes it.

FastStream builds the projector's consumer from a `BaseSecurity` object; its
`faststream.kafka.security.parse_security` turns that into the same aiokafka options that
`KafkaSecurity.client_options()` gives every other client (`tests/unit/test_kafka_security.py`
holds the two equal).
"""

from __future__ import annotations

from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from contracts.kafka import KafkaSecurity

_SASL: dict[str, type[SASLPlaintext] | type[SASLScram256] | type[SASLScram512]] = {
    "PLAIN": SASLPlaintext,
    "SCRAM-SHA-256": SASLScram256,
    "SCRAM-SHA-512": SASLScram512,
}


def faststream_security(security: KafkaSecurity) -> BaseSecurity | None:
    if security.protocol == "PLAINTEXT":
        return None
    context = security.ssl_context()
    if not security.uses_sasl:
        return BaseSecurity(ssl_context=context, use_ssl=True)
    assert security.sasl_mechanism is not None
    assert security.sasl_password is not None
    assert security.sasl_username is not None
    sasl = _SASL[security.sasl_mechanism]
    return sasl(
        security.sasl_username,
        security.sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=security.uses_tls,
    )

"""Dead letters: a poison record's original key and bytes, plus why and where it came from."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

MAX_REASON_CHARS = 500


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


class KafkaDeadLetters:
    """Sends dead letters to `<topic>.dlq` and waits for the broker's acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        try:
            delivered = await self._producer.send(
                self._topic, value=value, key=key, headers=headers
            )
        except MessageSizeTooLargeError:
            # Too large to dead-letter as it is (e.g. a compressed poison record of megabytes):
            # retrying would stall the stream forever. Keep the key and the reason, say so.
            size = len(value or b"")
            note = [("dlq.value_dropped", f"{size} bytes, too large for {self._topic}".encode())]
            # A record needs a key or a value: a keyless one keeps an empty value.
            delivered = await self._producer.send(
                self._topic, value=None if key else b"", key=key, headers=[*headers, *note]
            )
        await delivered

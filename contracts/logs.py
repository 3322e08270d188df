"""Structured logs of every process: one JSON object per line on stderr, secrets redacted.

Each line has `timestamp` (ISO 8601, UTC), `level`, `logger`, `message`, any `extra=` fields
a call site passes (`job`, `tenant`, `partition`, `offset`) and, for an exception, its
traceback as the `exc_info` string, so a log shipper never splits one event into many lines.

Redaction is defence in depth: no call site should log a token, a presigned URL or a Redis
password, but a library's exception text or a future log call might, and a log line is
copied to more places (shippers, tickets, chat) than any secret should be.
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

REDACTED = "<redacted>"
REDACTED_TOKEN = "<redacted token>"  # noqa: S105 - the marker, not a token

_B64URL = r"[A-Za-z0-9_-]"
# Order matters: a bearer credential goes whole before the JWT rule could leave its scheme
# beside a marker; the markers themselves match no rule, so redacting twice changes nothing.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # RFC 6750 b64token: letters, digits and -._~+/ then padding.
    (re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/-]+=*", re.IGNORECASE), rf"\1 {REDACTED}"),
    (re.compile(rf"eyJ{_B64URL}+\.{_B64URL}+\.{_B64URL}*"), REDACTED_TOKEN),
    (
        re.compile(
            r"(X-Amz-(?:Signature|Credential|Security-Token)(?:=|%3D))[^&\s\"'<>]+",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
    # The user part stays (it names an ACL user, not a secret), as in contracts.settings.redact.
    (re.compile(r"((?:rediss?|unix)://[^:@/\s]*:)[^@\s]+@", re.IGNORECASE), r"\1***@"),
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    """`text` with tokens, presigned-URL credentials and Redis passwords replaced."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: object) -> object:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """Rewrites a record's string args, extras and final message before any handler formats
    it. The message template and args are kept when redacting the args alone suffices (log
    aggregators group by template); otherwise the record carries the redacted final text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):
            record.args = {key: _redact_value(value) for key, value in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_redact_value(arg) for arg in record.args)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: keep what it said rather than lose the record
            message = f"{record.msg} {record.args!r}"
            record.args = ()
        redacted = redact(message)
        if redacted != message or not record.args:
            record.msg, record.args = redacted, ()
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonLines(JsonFormatter):
    """One JSON object per record; tracebacks are a redacted string field, never raw lines."""

    def __init__(self) -> None:
        super().__init__(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            # uvicorn adds an ANSI-coloured copy of some messages for its own formatter.
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        # First, so that a line reads in the order a person scans it: when, how bad, who, what.
        created = datetime.fromtimestamp(record.created, UTC)
        log_data["timestamp"] = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        super().add_fields(log_data, record, message_dict)

    def formatException(self, ei: Any) -> str:
        return _redacted_text(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _redacted_text(super().formatStack(stack_info))


def _redacted_text(text: str | list[str]) -> str:
    # A list only with the formatter's *_as_array options, which stay off: one string field.
    return redact(text if isinstance(text, str) else "\n".join(text))


def logging_config(level: int = logging.INFO) -> dict[str, Any]:
    """The `logging.config.dictConfig` of every process. Also handed to uvicorn, which applies
    it again in each worker process it spawns (a spawned worker does not inherit handlers)."""
    return {
        "version": 1,
        # Loggers created at import time (projector.batch, api.notifier ...) must keep working.
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets}},
        "formatters": {"json": {"()": JsonLines}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json",
                "filters": ["redact"],
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        # uvicorn's loggers write through the root handler, not handlers of their own.
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for this process: its loggers, Python warnings and a crash."""
    logging.config.dictConfig(logging_config(level))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    # The default hook prints a multi-line traceback that a log shipper splits into events.
    logging.getLogger("uncaught").critical(
        "uncaught %s", kind.__name__, exc_info=(kind, error, traceback)
    )

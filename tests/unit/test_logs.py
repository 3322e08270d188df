"""The JSON log lines and their redaction (`contracts.logs`).

Records are built and formatted directly, not logged: a planted token logged through a
logger of ours would reach the run's own log audit (`tests.log_audit`).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contracts.logs import REDACTED, REDACTED_TOKEN, JsonLines, RedactSecrets, redact

# Made up for these tests; the shapes are what matters.
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJ0ZW5hbnRfaWQiOiJhY21lIn0.c2lnbmF0dXJlLW1hZGUtdXAtZm9yLXRlc3Rz"  # noqa: S105
PRESIGNED = (
    "https://s3.example/renders/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIDEXAMPLE%2F20261129%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20261129T120000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host"
    "&X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE&X-Amz-Signature=0123456789abcdef"
)


def record(msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("projector.batch", logging.WARNING, __file__, 1, msg, args, None)
    made.__dict__.update(extra)
    return made


def filtered(made: logging.LogRecord) -> logging.LogRecord:
    assert RedactSecrets().filter(made)
    return made


def json_line(made: logging.LogRecord) -> str:
    return JsonLines().format(filtered(made))


def test_a_normal_message_passes_unchanged() -> None:
    made = filtered(record("dead-lettered partition=%s offset=%s: %s", 3, 17, "not JSON"))

    assert made.msg == "dead-lettered partition=%s offset=%s: %s"
    assert made.args == (3, 17, "not JSON")
    assert made.getMessage() == "dead-lettered partition=3 offset=17: not JSON"


def test_a_token_in_a_string_arg_is_redacted_and_the_template_kept() -> None:
    made = filtered(record("token %s refused", TOKEN))

    assert made.msg == "token %s refused"
    assert made.getMessage() == f"token {REDACTED_TOKEN} refused"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (f"Authorization: Bearer {TOKEN}", f"Authorization: Bearer {REDACTED}"),
        ("headers {'authorization': 'bearer opaque.value~1'}", f"'bearer {REDACTED}'}}"),
        ("got Bearer abc123== from a client", f"got Bearer {REDACTED} from a client"),
        (f"bare {TOKEN}.", f"bare {REDACTED_TOKEN}."),
        ("redis://:hunter2@cache:6379/0 down", "redis://:***@cache:6379/0 down"),
        ("rediss://app:s3cr:et@cache:6380/1", "rediss://app:***@cache:6380/1"),
        ("redis://cache:6379/0 is fine", "redis://cache:6379/0 is fine"),
    ],
)
def test_tokens_and_passwords_are_redacted(message: str, expected: str) -> None:
    assert expected in redact(message)


def test_presigned_url_credentials_are_redacted_and_the_rest_kept() -> None:
    shown = redact(f"artifact at {PRESIGNED}")

    assert f"X-Amz-Signature={REDACTED}" in shown
    assert f"X-Amz-Credential={REDACTED}" in shown
    assert f"X-Amz-Security-Token={REDACTED}" in shown
    assert "0123456789abcdef" not in shown
    assert "AKIDEXAMPLE" not in shown
    assert "X-Amz-Expires=300&X-Amz-SignedHeaders=host" in shown


def test_a_secret_split_between_template_and_args_is_redacted_in_the_final_message() -> None:
    # Neither part alone looks like a credential: only the final text does.
    made = filtered(record("Authorization: Bearer %s", "opaque-credential-42"))

    assert made.getMessage() == f"Authorization: Bearer {REDACTED}"
    assert made.args == ()


def test_extras_and_mapping_args_are_redacted() -> None:
    made = record("%(url)s", {"url": "redis://u:pw@h:1/0"}, job="01JDQ8", note=f"t={TOKEN}")

    filtered(made)

    assert made.getMessage() == "redis://u:***@h:1/0"
    assert made.__dict__["note"] == f"t={REDACTED_TOKEN}"
    assert made.__dict__["job"] == "01JDQ8"


def test_a_malformed_call_keeps_what_it_said() -> None:
    made = filtered(record("two %s %s", TOKEN))

    assert made.getMessage().startswith("two %s %s (")
    assert TOKEN not in made.getMessage()


def test_redacting_twice_changes_nothing() -> None:
    once = redact(f"{PRESIGNED} Bearer {TOKEN} redis://:pw@h/0")

    assert redact(once) == once


def test_a_json_line_parses_with_the_required_keys() -> None:
    made = record(
        "dead-lettered partition=%s offset=%s: %s",
        2,
        40,
        "bad",
        job="01JDQ8Z3M4W8K2V7T6R5N4P3Q2",
        tenant="acme",
        partition=2,
        offset=40,
    )

    line = json_line(made)

    assert "\n" not in line
    fields = json.loads(line)
    assert list(fields)[:4] == ["timestamp", "level", "logger", "message"]
    assert fields["level"] == "WARNING"
    assert fields["logger"] == "projector.batch"
    assert fields["message"] == "dead-lettered partition=2 offset=40: bad"
    assert (fields["job"], fields["tenant"], fields["partition"], fields["offset"]) == (
        "01JDQ8Z3M4W8K2V7T6R5N4P3Q2",
        "acme",
        2,
        40,
    )
    stamp = datetime.fromisoformat(fields["timestamp"])
    assert stamp.utcoffset() == UTC.utcoffset(None)
    assert abs(stamp.timestamp() - made.created) < 0.001


def test_a_traceback_is_one_redacted_field_of_the_line() -> None:
    try:
        raise ConnectionError(f"refused redis://:hunter2@cache:6379/0 with {TOKEN}")
    except ConnectionError:
        made = logging.LogRecord(
            "api.notifier", logging.ERROR, __file__, 1, "lost", (), sys.exc_info()
        )

    line = json_line(made)

    assert "\n" not in line
    fields = json.loads(line)
    assert fields["message"] == "lost"
    assert fields["exc_info"].startswith("Traceback (most recent call last):")
    assert (
        "ConnectionError: refused redis://:***@cache:6379/0 with <redacted token>"
        in (fields["exc_info"])
    )
    assert "hunter2" not in line


def test_uvicorn_colour_copies_are_left_out() -> None:
    fields = json.loads(json_line(record("Uvicorn running", color_message="\x1b[1mUvicorn")))

    assert "color_message" not in fields


def test_a_configured_process_writes_only_json_lines_to_stderr() -> None:
    program = textwrap.dedent(
        f"""
        import logging, warnings
        from contracts.logs import configure_logging
        configure_logging()
        logging.getLogger("uvicorn.error").info("Started server process")
        logging.getLogger("projector").info("token %s", {TOKEN!r}, extra={{"job": "j1"}})
        warnings.warn("a warning")
        try:
            1 / 0
        except ZeroDivisionError:
            logging.getLogger("projector.batch").exception("not prepared")
        print("human output")
        raise RuntimeError("crashed")
        """
    )

    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.stdout == "human output\n"
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(f["logger"], f["level"]) for f in lines] == [
        ("uvicorn.error", "INFO"),
        ("projector", "INFO"),
        ("py.warnings", "WARNING"),
        ("projector.batch", "ERROR"),
        ("uncaught", "CRITICAL"),
    ]
    assert lines[1]["message"] == f"token {REDACTED_TOKEN}"
    assert lines[1]["job"] == "j1"
    assert "ZeroDivisionError" in lines[3]["exc_info"]
    assert "RuntimeError: crashed" in lines[4]["exc_info"]

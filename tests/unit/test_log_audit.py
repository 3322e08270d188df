"""The log audit can fail: it finds planted tokens, signatures and secrets (`log_audit`).

Planted files end in `.txt`, or live outside pytest's temporary folder: the run's own audit
reads every `*.log` there, and must not find these on purpose.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from devstack import DEFAULT_S3_CREDENTIALS
from tests.log_audit import RunRecorder, audit, find_leaks, known_secrets, our_logs

PLANTED_SECRET = "planted-secret-0123456789abcdef"  # noqa: S105 - a test key
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJ0ZW5hbnRfaWQiOiJhY21lIn0.c2lnbmF0dXJlLW1hZGUtdXAtZm9yLXRlc3Rz"  # noqa: S105
SIGNATURE = TOKEN.rsplit(".", 1)[1]


def planted(folder: Path, *lines: str, name: str = "projector.txt") -> Path:
    path = folder / name
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def test_a_clean_log_has_no_leak(tmp_path: Path) -> None:
    path = planted(
        tmp_path,
        '{"level": "INFO", "message": "projecting jobs.events into version v1"}',
        '{"message": "Authorization: Bearer <redacted> and <redacted token>"}',
        '{"message": "url ?X-Amz-Signature=<redacted> redis://:***@cache:6379/0"}',
    )

    assert find_leaks([path], {PLANTED_SECRET}, {SIGNATURE}) == []


def test_the_scanner_catches_a_planted_token_a_signature_and_the_secret(tmp_path: Path) -> None:
    path = planted(
        tmp_path,
        "started",
        f'{{"message": "refused {TOKEN}"}}',
        '{"message": "GET /renders/a.png?X-Amz-Date=1&X-Amz-Signature=0123abcd"}',
        f"settings: jwt_secret={PLANTED_SECRET}",
        f"signature alone: {SIGNATURE}",
        "Authorization: Bearer opaque-credential",
        "redis://:hunter2@cache:6379/0",
        "done",
    )

    leaks = find_leaks([path], {PLANTED_SECRET}, {SIGNATURE})

    assert [(leak.line, leak.what) for leak in leaks] == [
        (2, "JWT"),
        (3, "presigned-URL credential"),
        (4, "a secret of the run"),
        (5, "a part of a token the tests minted"),
        (6, "bearer credential"),
        (7, "Redis password"),
    ]
    assert str(leaks[0]).startswith(f"{path}:2: JWT: ")


def test_the_report_of_a_leak_does_not_repeat_it(tmp_path: Path) -> None:
    path = planted(tmp_path, f"key {PLANTED_SECRET} and {TOKEN} and X-Amz-Signature=0123abcd")

    [leak] = find_leaks([path], {PLANTED_SECRET})

    assert PLANTED_SECRET not in str(leak)
    assert TOKEN not in str(leak)
    assert "0123abcd" not in str(leak)


def test_short_secrets_are_not_matched_as_words(tmp_path: Path) -> None:
    path = planted(tmp_path, "s is a letter, test a word")

    assert find_leaks([path], {"s", "test"}) == []


def test_the_audit_reads_our_logs_and_not_the_servers_that_are_not_ours() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "test_x0").mkdir()
        planted(root / "test_x0", f"token {TOKEN}", name="projector-v2.log")
        planted(root, "GET /a.png?X-Amz-Signature=0123abcd HTTP/1.1", name="moto-s3.log")
        planted(root, "Ready to accept connections", name="redis-40001.log")
        planted(root, "started", name="tansu.log")

        leaks = audit(root, RunRecorder(root))

        assert [(leak.path.name, leak.line) for leak in leaks] == [("projector-v2.log", 1)]
        assert our_logs(root) == [root / "test_x0" / "projector-v2.log"]


def test_the_run_secrets_include_test_keys_and_the_s3_secret_key() -> None:
    secrets = known_secrets()

    assert PLANTED_SECRET in secrets
    assert DEFAULT_S3_CREDENTIALS[1] in secrets


def test_minted_tokens_are_remembered_by_payload_and_signature(tmp_path: Path) -> None:
    recorder = RunRecorder(tmp_path)

    encode = recorder.recording_encode(lambda *_args, **_kwargs: TOKEN)

    assert encode({"tenant_id": "acme"}, "key", algorithm="HS256") == TOKEN
    assert recorder.token_parts == set(TOKEN.split(".")[1:])


def test_the_stderr_of_our_commands_is_kept_as_a_log(tmp_path: Path) -> None:
    recorder = RunRecorder(tmp_path)

    def fake_run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 0, stdout="table", stderr=f"ran {argv[2]}\n")

    run = recorder.recording_run(fake_run)
    run(["python", "-m", "projector", "replay", "status"], capture_output=True)
    run(["python", "-m", "api"], capture_output=True)
    run(["redis-cli", "--cluster", "create"], capture_output=True)

    kept = sorted(path.name for path in tmp_path.iterdir())
    assert kept == ["run-0001-projector-replay.log", "run-0002-api.log"]
    assert (tmp_path / "run-0001-projector-replay.log").read_text() == "ran projector\n"

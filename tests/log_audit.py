"""The audit of a test run's logs: no line of ours holds a token, a secret or a signed URL.

What is audited, at the end of the session (`audited_logs` in `tests/conftest.py`):

- every `*.log` under pytest's base temporary folder except the servers that are not ours
  (Tansu, redis-server, moto: `INFRASTRUCTURE_LOG`). Our projectors and apis write there
  (`devstack.services`), whatever folder a test gave them; a log file of any new kind is
  audited too, so a new way of starting our processes cannot slip past unnoticed;
- the stderr of `python -m projector ...` / `python -m api` run with `subprocess.run` (the
  command-line tests): `RunRecorder.recording_run` copies it into a `.log` of that folder;
- the records of our loggers (`projector`, `api`, `contracts`) in the pytest process,
  copied raw, without the redaction filter, so what our code itself logs is checked.

What counts as a leak: a literal secret of the run (`known_secrets`), a part of a token the
tests minted with `jwt.encode` (`RunRecorder.recording_encode`), or a generic shape
(`LEAK_PATTERNS`). The redaction markers of `contracts.logs` are not leaks: a redacted line
no longer holds the secret.

Not covered: `asyncio.create_subprocess_exec` (one test of `replay job`, whose code the
in-process tests also run); secrets of a Docker S3 container (generated at its start).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest

from contracts.logs import REDACTED, redact

# Log files of the servers `devstack.processes` starts: not ours, and moto's request log
# holds the presigned URLs that the tests fetch from it, by design.
INFRASTRUCTURE_LOG = re.compile(r"(tansu|moto-s3|redis-\d+|redis-cluster-\d+)\.log")

LEAK_PATTERNS: dict[str, re.Pattern[str]] = {
    "presigned-URL credential": re.compile(
        rf"X-Amz-(?:Signature|Credential|Security-Token)=(?!{re.escape(REDACTED)})"
    ),
    "JWT": re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\."),
    "bearer credential": re.compile(rf"Bearer\s+(?!{re.escape(REDACTED)})\S"),
    "Redis password": re.compile(r"rediss?://[^:@/\s]*:(?!\*\*\*@)[^@\s]+@"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}

# Shorter literals ("s", "test") would match ordinary words; the tests' keys are longer.
MIN_SECRET_CHARS = 8
# A token's payload and signature are base64url runs of 16+ characters (an HS256 signature
# has 43); shorter runs are ordinary words and numbers.
TOKEN_PART_CHARS = 16
_TOKEN_PART = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_PART_CHARS},}}")
OUR_LOGGERS = ("projector", "api", "contracts")
SECRET_SETTINGS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "JWT_SECRET")


@dataclass(frozen=True)
class Leak:
    path: Path
    line: int
    what: str
    excerpt: str  # redacted itself: the report of a leak must not spread it

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}: {self.excerpt}"


def find_leaks(
    paths: Iterable[Path], secrets: Iterable[str] = (), token_parts: Iterable[str] = ()
) -> list[Leak]:
    """Every line of `paths` that holds one of `secrets`, one of `token_parts` (a base64url
    run of a minted token) or a shape of `LEAK_PATTERNS`."""
    literals = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
    parts = frozenset(p for p in token_parts if len(p) >= TOKEN_PART_CHARS)
    leaks: list[Leak] = []
    for path in paths:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                what = _leak_in(line, literals, parts)
                if what is not None:
                    leaks.append(Leak(path, number, what, _excerpt(line, literals)))
    return leaks


def _leak_in(line: str, literals: list[str], parts: frozenset[str]) -> str | None:
    for what, pattern in LEAK_PATTERNS.items():
        if pattern.search(line):
            return what
    if any(secret in line for secret in literals):
        return "a secret of the run"
    if parts and any(run in parts for run in _TOKEN_PART.findall(line)):
        return "a part of a token the tests minted"
    return None


def _excerpt(line: str, literals: list[str], limit: int = 300) -> str:
    shown = redact(line.strip())
    for secret in literals:
        shown = shown.replace(secret, "<secret>")
    return shown if len(shown) <= limit else shown[:limit] + " ..."


def our_logs(root: Path) -> list[Path]:
    """The log files under `root` that our processes (or the recorder) wrote."""
    found = (p for p in root.rglob("*.log") if p.is_file())
    return sorted(p for p in found if not INFRASTRUCTURE_LOG.fullmatch(p.name))


def known_secrets() -> set[str]:
    """The run's literal secrets: the tests' JWT keys (module constants named `*SECRET*` in
    the loaded test modules), the S3 secret key the harness gives moto and the api, and
    secrets set in the environment."""
    from devstack import DEFAULT_S3_CREDENTIALS

    secrets = {DEFAULT_S3_CREDENTIALS[1]}
    for name, module in list(sys.modules.items()):
        if name == "tests" or name.startswith("tests."):
            for attribute, value in vars(module).items():
                if "SECRET" in attribute and attribute.isupper() and isinstance(value, str):
                    secrets.add(value)
    secrets.update(os.environ[name] for name in SECRET_SETTINGS if os.environ.get(name))
    return secrets


def report(leaks: list[Leak]) -> str:
    lines = [f"{len(leaks)} log line(s) of our processes hold a token or a secret:"]
    lines += [f"  {leak}" for leak in leaks[:50]]
    if len(leaks) > 50:
        lines.append(f"  ... and {len(leaks) - 50} more")
    return "\n".join(lines)


@dataclass
class RunRecorder:
    """What the audit needs that no log file holds by itself."""

    folder: Path
    token_parts: set[str] = field(default_factory=set)
    _runs: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def minted(self, token: object) -> None:
        if isinstance(token, str):  # header.payload.signature: the header is no secret
            self.token_parts.update(token.split(".")[1:])

    def recording_encode(self, encode: Callable[..., str]) -> Callable[..., str]:
        def recorded(*args: Any, **kwargs: Any) -> str:
            token = encode(*args, **kwargs)
            self.minted(token)
            return token

        return recorded

    def recording_run(self, run: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            done = run(*args, **kwargs)
            command = _our_command(args[0] if args else kwargs.get("args"))
            if command is not None and isinstance(done, subprocess.CompletedProcess):
                self._keep(command, done.stderr)
            return done

        return recorded

    def _keep(self, command: str, stderr: object) -> None:
        path = self.folder / f"run-{next(self._runs):04d}-{command}.log"
        if isinstance(stderr, bytes):
            path.write_bytes(stderr)
        elif isinstance(stderr, str):
            path.write_text(stderr, encoding="utf-8")

    @contextlib.contextmanager
    def in_process_records(self) -> Iterator[None]:
        handler = logging.FileHandler(self.folder / "in-process.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        handler.addFilter(lambda record: record.name.split(".")[0] in OUR_LOGGERS)
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            handler.close()


def _our_command(argv: object) -> str | None:
    """`projector-replay` for `python -m projector replay ...`; None for other commands."""
    if not isinstance(argv, list | tuple):
        return None
    words = [str(word) for word in argv]
    for at, word in enumerate(words[:-1]):
        if word == "-m" and words[at + 1] in ("projector", "api"):
            rest = words[at + 1 : at + 3]
            return "-".join(re.sub(r"[^A-Za-z0-9_]", "_", w) for w in rest)
    return None


@contextlib.contextmanager
def recording(folder: Path) -> Iterator[RunRecorder]:
    """Record, for the time of the block, what `RunRecorder` collects."""
    recorder = RunRecorder(folder)
    with pytest.MonkeyPatch.context() as patch, recorder.in_process_records():
        patch.setattr(subprocess, "run", recorder.recording_run(subprocess.run))
        patch.setattr(jwt, "encode", recorder.recording_encode(jwt.encode))
        yield recorder


def audit(root: Path, recorder: RunRecorder) -> list[Leak]:
    return find_leaks(our_logs(root), known_secrets(), recorder.token_parts)

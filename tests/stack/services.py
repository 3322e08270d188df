"""Our own processes (projector, api) started against a stack, as an operator would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.stack.processes import LocalProcess, free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]


def _start(name: str, argv: list[str], env: dict[str, str], workdir: Path) -> LocalProcess:
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env={**os.environ, **env},
            start_new_session=True,
        )
    return LocalProcess(name, 0, process, log_path, argv)


def start_projector(env: dict[str, str], workdir: Path, name: str = "projector") -> LocalProcess:
    """`python -m projector run`; ready once its consumer joined (watch its log or results)."""
    return _start(name, [sys.executable, "-m", "projector", "run"], env, workdir)


def start_api(env: dict[str, str], workdir: Path, port: int | None = None) -> LocalProcess:
    port = port or free_port()
    api = _start("api", [sys.executable, "-m", "api"], {**env, "API_PORT": str(port)}, workdir)
    api.port = port
    try:
        wait_for_port(port, api.process, "api", timeout=30)
    except RuntimeError as exc:
        api.stop()
        raise RuntimeError(f"{exc}\n{api.log_tail()}") from None
    return api

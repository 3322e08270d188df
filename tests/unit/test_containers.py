"""The container stack (`JOBS_STACK=containers`) is built without a Docker engine: every
definition, with no warning (warnings are errors here) and no call to an engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devstack import containers, processes, start_stack


def test_the_kafka_container_is_apache_kafka_in_kraft_mode_advertising_its_host_port() -> None:
    kafka = containers.kafka_container(host_port=19092)
    assert kafka.image == "apache/kafka:3.9.1"
    assert kafka.env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka.env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:19092"
    assert kafka.ports == {"9092": 19092}


def test_redis_runs_without_eviction_and_minio_comes_from_quay_io() -> None:
    redis = containers.redis_container()
    assert redis.image.startswith("redis:")
    assert "--maxmemory-policy noeviction" in str(redis._command)
    minio = containers.minio_container()
    assert minio.image.startswith("quay.io/minio/minio:")
    assert minio.env["MINIO_ROOT_USER"] == containers.MINIO_CREDENTIALS[0]


def test_every_redis_the_project_starts_keeps_job_hashes_compact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The local processes, the containers and docker-compose.yml: the same settings."""
    settings = " ".join(processes.REDIS_STORAGE_SETTINGS)
    assert settings == "--hash-max-listpack-value 1024"
    assert settings in str(containers.redis_container()._command)
    monkeypatch.setattr(processes, "redis_server_binary", lambda: "redis-server")
    assert settings in " ".join(processes._redis_argv(6379, Path("data")))
    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    assert settings in " ".join(compose["services"]["redis"]["command"])


def test_a_remote_docker_host_is_where_published_ports_are_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://docker.internal:2375")
    assert containers.docker_host() == "docker.internal"
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert containers.docker_host() == "127.0.0.1"


def test_an_unknown_stack_kind_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("JOBS_STACK", "kubernetes")
    with pytest.raises(ValueError, match="JOBS_STACK=kubernetes"):
        start_stack(tmp_path)  # type: ignore[arg-type]

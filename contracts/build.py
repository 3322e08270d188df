"""What a process reports about its build: the `<process>_build_info` metric."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

DISTRIBUTION = "jobs-read-model"

# No `<name>_created` series beside every counter and histogram: Prometheus does not need
# them, and they double what a scrape carries. Set before any metric of ours exists.
disable_created_metrics()  # type: ignore[no-untyped-call]


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def register_build_info(process: str, registry: CollectorRegistry) -> None:
    """`<process>_build_info{version, python}` = 1, the Prometheus convention. A gauge rather
    than an Info: it also works in multiprocess mode (the api's workers)."""
    Gauge(
        f"{process}_build_info",
        f"The {process}'s build.",
        ["version", "python"],
        registry=registry,
        multiprocess_mode="max",
    ).labels(package_version(), platform.python_version()).set(1)


def register_runtime_collectors(registry: CollectorRegistry) -> None:
    """`process_*` (CPU, memory, file descriptors) and `python_gc_*` of this process."""
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)

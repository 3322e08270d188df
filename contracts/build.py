"""What a process reports about its build: the `<process>_build_info` metric."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Info, disable_created_metrics

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
    """`<process>_build_info{version, python}` = 1, the Prometheus convention."""
    Info(f"{process}_build", f"The {process}'s build.", registry=registry).info(
        {"version": package_version(), "python": platform.python_version()}
    )

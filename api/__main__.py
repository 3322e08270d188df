"""`python -m api` - serve the read API with uvicorn (uvloop, httptools)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
from pathlib import Path

import uvicorn

from api.auth import jwt_config
from api.presign import Presigner
from api.settings import ApiSettings
from contracts.logs import configure_logging, logging_config
from contracts.redis_client import redis_problem
from contracts.settings import config_error, load_or_exit, redact

REDIS_CHECK_SECONDS = 5.0
log = logging.getLogger("api")


DESCRIPTION = """\
Serve GET /v1/jobs/{id} from the active projection version in Redis, presigning artifact
URLs; /healthz, /readyz and /metrics beside it. Settings come from the environment (README
"Configuration"; .env.example lists them all).

It refuses to start, with one line naming the setting, when a setting is invalid (e.g.
JWT_SECRET shorter than 32 bytes, no presigning credentials) or Redis refuses the
credentials or TLS. A Redis that does not answer yet is waited for: /readyz and the reads
answer 503 with Retry-After until it does.

exit status: 0 stopped by a signal, 2 refused to start (as above)."""


def main() -> None:
    argparse.ArgumentParser(
        prog="python -m api",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args()
    configure_logging()
    settings = load_or_exit(ApiSettings)
    try:  # the same check the app makes, here as one line instead of a traceback
        Presigner.from_boto3(None, settings.aws_region, settings.s3_endpoint_url)
    except ValueError as exc:
        config_error(f"S3_ENDPOINT_URL / AWS_* (presigning): {exc}")
    try:
        jwt_config(settings)
    except ValueError as exc:
        config_error(str(exc))
    # A Redis that refuses our credentials or TLS is a setting to fix: stop. One that does
    # not answer yet is waited for: the api answers 503 until it does (CONTRACT §3).
    problem = asyncio.run(redis_problem(settings.redis_url, REDIS_CHECK_SECONDS))
    if problem is not None and problem.refused:
        config_error(f"REDIS_URL={redact(settings.redis_url)}: {problem.reason}")
    if problem is not None:
        log.warning("Redis does not answer yet (%s): 503 until it does", problem.reason)
    if settings.api_workers > 1:
        share_metrics_between_workers()
    else:  # one process: its own registry, with its process and GC collectors
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        # Applied again by each worker uvicorn spawns, so every process writes JSON lines.
        log_config=logging_config(),
        log_level="info",
    )


def share_metrics_between_workers() -> None:
    """Workers are processes of their own: their samples go to files in
    PROMETHEUS_MULTIPROC_DIR, which any worker's /metrics sums. Set before the workers start
    (they read it when they import prometheus_client); emptied, so that no dead worker's
    samples of an earlier run count."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="api-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    for stale in Path(folder).glob("*.db"):
        stale.unlink()


if __name__ == "__main__":
    main()

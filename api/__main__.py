"""`python -m api` - serve the read API with uvicorn (uvloop, httptools)."""

from __future__ import annotations

import uvicorn

from api.presign import Presigner
from api.settings import ApiSettings
from contracts.logs import configure_logging, logging_config
from contracts.settings import config_error, load_or_exit


def main() -> None:
    configure_logging()
    settings = load_or_exit(ApiSettings)
    try:  # the same check the app makes, here as one line instead of a traceback
        Presigner.from_boto3(None, settings.aws_region, settings.s3_endpoint_url)
    except ValueError as exc:
        config_error(f"S3_ENDPOINT_URL / AWS_* (presigning): {exc}")
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


if __name__ == "__main__":
    main()

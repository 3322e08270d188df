"""`python -m api` - serve the read API with uvicorn (uvloop, httptools)."""

from __future__ import annotations

import uvicorn

from api.settings import ApiSettings
from contracts.settings import load_or_exit


def main() -> None:
    settings = load_or_exit(ApiSettings)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
    )


if __name__ == "__main__":
    main()

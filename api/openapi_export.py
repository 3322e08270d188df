"""The api's OpenAPI document, committed as `contracts/schema/openapi.json`.

`python -m api.openapi_export` (`make schema`) rewrites it; a unit test fails when the
committed file differs from what the app serves at `/openapi.json`. The document does not
depend on settings, so it is built from placeholder ones: nothing is connected.
"""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

from api.app import create_app
from api.settings import ApiSettings
from contracts.schema_export import SCHEMA_DIR, render

OPENAPI_PATH = SCHEMA_DIR / "openapi.json"

_PLACEHOLDERS = {
    "JWT_SECRET": "placeholder-secret-of-at-least-32-bytes",
    "ARTIFACT_BUCKETS": "renders",
    "AWS_ACCESS_KEY_ID": "placeholder",
    "AWS_SECRET_ACCESS_KEY": "placeholder",
    "AWS_REGION": "us-east-1",
}


def openapi_document() -> dict[str, Any]:
    with mock.patch.dict(os.environ, _PLACEHOLDERS, clear=True):
        return create_app(ApiSettings()).openapi()


def render_openapi() -> str:
    return render(openapi_document())


if __name__ == "__main__":
    OPENAPI_PATH.write_text(render_openapi(), encoding="utf-8")
    print(f"wrote {OPENAPI_PATH}")

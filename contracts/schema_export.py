"""JSON Schema of the event envelope, for producers in other languages.

`python -m contracts.schema_export` rewrites `contracts/schema/job_event.v1.json`; a unit test
fails when the committed file differs from what the models generate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contracts.events import JobEvent

SCHEMA_PATH = Path(__file__).parent / "schema" / "job_event.v1.json"


def job_event_schema() -> dict[str, Any]:
    schema = JobEvent.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "job_event.v1.json"
    return schema


def render_schema() -> str:
    return json.dumps(job_event_schema(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render_schema(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")

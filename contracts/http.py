"""The HTTP bodies of `GET /v1/jobs/{id}` (CONTRACT §3).

These are the returned shapes: artifacts carry a presigned `image_url` and nothing else of
storage. They are separate types from the stored ones in `contracts.job_state`, so a bucket or
a key cannot reach a response by accident.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.job_state import Status

# The route of a job, `GET /v1/jobs/{id}`: its prefix, and the template as routers name it.
JOBS_PATH = "/v1/jobs/"
JOB_ROUTE = JOBS_PATH + "{id}"


class Artifact(BaseModel):
    """A job artifact - image_url is a short-lived presigned GET URL; a raw S3 key never
    crosses this boundary."""

    model_config = ConfigDict(frozen=True)

    image_url: str = Field(description="Short-lived presigned GET URL for the artifact image.")
    kind: str = Field(description='Artifact kind, e.g. "on_model_render", "catalog_image".')
    role: Literal["intermediate", "final"] = Field(description="Intermediate | final.")
    metadata: dict[str, Any] = Field(description="Kind-specific metadata.")


class PublicEvent(BaseModel):
    """One public-visibility event in a job's timeline."""

    model_config = ConfigDict(frozen=True)

    seq: int = Field(description="Monotonic per-job sequence number - the polling cursor.")
    kind: Literal["queued", "stage", "succeeded", "failed"] = Field(
        description="Queued | stage | succeeded | failed."
    )
    visibility: Literal["public"] = Field(description="Always 'public' on this surface.")
    message: str = Field(description="Human-readable event line.")
    artifacts: list[Artifact] = Field(description="Presigned artifacts for this event.")
    payload: dict[str, Any] = Field(description="Type-specific payload fields (cost/error/etc.).")
    created_at: str = Field(
        description="When the event happened: RFC 3339 in UTC, ending in Z.",
        json_schema_extra={"format": "date-time"},
    )


class JobResponse(BaseModel):
    """GET /v1/jobs/{id} - header + final result manifest + latest event."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "01JDQ8Z3M4W8K2V7T6R5N4P3Q2",
                    "type": "ON_MODEL_RENDER",
                    "status": "SUCCEEDED",
                    "created_at": "2026-11-29T12:00:00Z",
                    "manifest": [
                        {
                            "image_url": "https://bucket.s3.amazonaws.com/...presigned...",
                            "kind": "on_model_render",
                            "role": "final",
                            "metadata": {"width": 2048, "height": 3072},
                        }
                    ],
                    "latest_event": {
                        "seq": 7,
                        "kind": "succeeded",
                        "visibility": "public",
                        "message": "Render finished",
                        "artifacts": [],
                        "payload": {"cost": {"credits": 3}},
                        "created_at": "2026-11-29T12:03:10Z",
                    },
                }
            ]
        },
    )

    id: str = Field(description="The job's ULID public_id.")
    type: str = Field(description="The job's type (UPPER_SNAKE).")
    status: Status = Field(description="The job's current status.")
    created_at: str = Field(
        description="When the job was created: RFC 3339 in UTC, ending in Z.",
        json_schema_extra={"format": "date-time"},
    )
    manifest: list[Artifact] = Field(
        description="The final-artifact manifest (empty until the job succeeds)."
    )
    latest_event: PublicEvent | None = Field(
        description="The latest public event; null when there is none."
    )


ErrorCode = Literal["UNAUTHENTICATED", "JOB_NOT_FOUND", "UNAVAILABLE", "TOO_MANY_REQUESTS"]


class ErrorDetail(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str


class ErrorBody(BaseModel):
    """The body of every 401, 404, 429 and 503: `{"detail": {"code": ..., "message": ...}}`."""

    model_config = ConfigDict(frozen=True)

    detail: ErrorDetail

"""The pieces of a job's response: its presign time bucket and its headers."""

from __future__ import annotations

from api.read_job import time_bucket


def test_each_job_has_its_own_time_bucket_and_they_turn_spread_over_the_bucket() -> None:
    seconds = 60
    jobs = [f"01J{n:023d}" for n in range(200)]
    now = 1_800_000_000.5
    starts = {job: time_bucket(job, now, seconds) for job in jobs}
    for job, start in starts.items():
        assert start <= now < start + seconds
        assert time_bucket(job, start, seconds) == start
        assert time_bucket(job, start + seconds - 0.001, seconds) == start
        assert time_bucket(job, start + seconds, seconds) == start + seconds
    offsets = {start % seconds for start in starts.values()}
    assert len(offsets) > seconds // 2, "the jobs' buckets turn at many different seconds"


def test_a_job_response_has_the_headers_of_a_starlette_response() -> None:
    from fastapi.responses import Response

    from api.read_job import JobBodyResponse

    etag = '"v1.3.3.1800000000.0badf00d"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    body = b'{"id":"J"}'
    ok = Response(body, media_type="application/json", headers=headers)
    assert JobBodyResponse(200, body, etag).raw_headers == ok.raw_headers
    not_modified = Response(status_code=304, headers=headers)
    assert JobBodyResponse(304, b"", etag).raw_headers == not_modified.raw_headers

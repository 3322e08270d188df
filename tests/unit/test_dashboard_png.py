"""The dashboard picture: every panel's PromQL is understood and evaluated like Prometheus."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from bench.dashboard_png import Recording, parse, render

DASHBOARD = Path(__file__).parents[2] / "deploy/grafana/dashboards/jobs-read-model.json"
READ_ROUTE = "/v1/jobs/{id}"


def synthetic_recording(seconds: int = 90) -> list[dict[str, Any]]:
    """Both endpoints as the processes expose them, under a steady made-up load."""
    rng = random.Random(7)
    projector, api = CollectorRegistry(), CollectorRegistry()
    events = Counter("projector_events", "events", ["outcome"], registry=projector)
    lag = Gauge("projector_consumer_lag", "lag", ["partition"], registry=projector)
    visible = Histogram("projector_event_to_visible_seconds", "e2v", registry=projector)
    batch = Histogram("projector_batch_seconds", "batch", registry=projector)
    Info("projector_build", "build", registry=projector).info({"version": "0.1.0"})
    requests = Histogram("api_request_seconds", "requests", ["route", "status"], registry=api)
    presign = Histogram("api_presign_seconds", "presign", registry=api)
    Info("api_build", "build", registry=api).info({"version": "0.1.0"})
    samples = []
    for second in range(seconds):
        events.labels("applied").inc(200)
        events.labels("duplicate").inc(4)
        events.labels("dead_lettered").inc(1 if second % 10 == 0 else 0)
        for partition in range(4):
            lag.labels(str(partition)).set(rng.randrange(50))
        for _ in range(20):
            visible.observe(rng.uniform(0.01, 0.2))
            batch.observe(rng.uniform(0.005, 0.05))
            presign.observe(rng.uniform(0.00002, 0.0002))
        for status, count in (("200", 50), ("304", 10), ("404", 3), ("503", 1)):
            for _ in range(count):
                requests.labels(READ_ROUTE, status).observe(rng.uniform(0.002, 0.03))
        requests.labels("/healthz", "200").observe(0.001)
        samples.append(
            {
                "t": 1_800_000_000 + second,
                "projector": generate_latest(projector).decode(),
                "api": generate_latest(api).decode(),
            }
        )
    return samples


def test_renders_every_panel_with_data_from_a_recording(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    out = tmp_path / "dashboard.png"

    results = render(dashboard, Recording.from_samples(synthetic_recording()), out)

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert [r.expr for r in results] == expressions
    assert [r.expr for r in results if r.series == 0 or r.points == 0] == []
    by_title = {r.panel: r for r in results}
    assert by_title["Events/s by outcome"].series == 3
    assert by_title["Consumer lag by partition"].series == 4


def rec(frames: list[str], job: str = "projector") -> Recording:
    return Recording.from_samples({"t": t, job: text} for t, text in enumerate(frames))


def test_rate_is_the_per_second_increase_and_survives_a_counter_reset() -> None:
    values = [0, 10, 20, 30, 5, 15]  # the process restarted before the fifth scrape
    recording = rec([f"c_total 7\nx_total {v}\n" for v in values])

    rate = recording.evaluate(parse("sum(rate(x_total[1m]))"), len(values) - 1)

    assert rate == {(): pytest.approx((10 + 10 + 10 + 5 + 10) / 5)}


def test_histogram_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    def histogram(n: int) -> str:
        return (
            f'h_bucket{{le="0.1"}} {50 * n}\nh_bucket{{le="0.2"}} {100 * n}\n'
            f'h_bucket{{le="+Inf"}} {100 * n}\nh_count {100 * n}\nh_sum 1\n'
        )

    recording = rec([histogram(n) for n in range(3)])

    def quantile(q: float) -> float:
        expr = parse(f"histogram_quantile({q}, sum by (le) (rate(h_bucket[1m])))")
        return recording.evaluate(expr, 2)[()]

    assert quantile(0.5) == pytest.approx(0.1)
    assert quantile(0.99) == pytest.approx(0.198)
    idle = rec([histogram(0)] * 3).evaluate(
        parse("histogram_quantile(0.5, sum by (le) (h_bucket))"), 2
    )
    assert math.isnan(idle[()])


def test_matchers_select_by_label_and_regex_and_aggregation_keeps_the_by_labels() -> None:
    recording = rec(
        [
            'r_count{route="/a",status="200"} 1\n'
            'r_count{route="/a",status="404"} 2\n'
            'r_count{route="/b",status="503"} 4\n'
        ],
        job="api",
    )

    def at_end(expr: str) -> dict[Any, float]:
        return recording.evaluate(parse(expr), 0)

    assert at_end('sum(r_count{status=~"4..|5.."})') == {(): 6}
    assert at_end('sum by (route) (r_count{status!="404"})') == {
        (("route", "/a"),): 1,
        (("route", "/b"),): 4,
    }
    assert at_end('max by (job) (r_count{route="/a"})') == {(("job", "api"),): 2}


@pytest.mark.parametrize(
    "expr",
    [
        "irate(x_total[1m])",
        "x_total[1m]",
        "rate(x_total)",
        "sum(rate(x_total[1m])) / 2",
        'label_replace(x, "a", "$1", "b", "(.*)")',
    ],
)
def test_an_expression_outside_the_subset_is_refused(expr: str) -> None:
    with pytest.raises(ValueError, match="in"):
        parse(expr)

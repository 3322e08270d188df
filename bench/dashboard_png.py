"""The Grafana dashboard as a PNG, from a recording of the two `/metrics` endpoints.

    python -m bench.dashboard_png record --projector http://127.0.0.1:8001/metrics \\
        --api http://127.0.0.1:8000/metrics --seconds 120 --out run.jsonl
    python -m bench.dashboard_png render \\
        --dashboard deploy/grafana/dashboards/jobs-read-model.json \\
        --recording run.jsonl --out docs/dashboard.png

A recording is JSON lines, one a second: `{"t": <unix seconds>, "projector": "<text>", "api":
"<text>"}`. `render` evaluates each panel's PromQL over it with the subset of PromQL the
dashboard uses - selectors with `=`, `!=`, `=~`, `!~`; `rate(...[d])`; `sum|max|min|avg|count
[by (...)]`; `histogram_quantile` - so the picture shows the same series as Grafana, without
Prometheus. `rate` is the increase over the window's samples (counter resets handled) divided
by their time span, without Prometheus' extrapolation to the window's edges. An expression
outside the subset is an error, not an empty panel.
"""

from __future__ import annotations

import argparse
import bisect
import codecs
import itertools
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]  # sorted; the metric name is `__name__`
Vector = dict[Labels, float]
JOBS = ("projector", "api")


# ---- PromQL subset -------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str, str], ...] = ()
    range_seconds: float | None = None


@dataclass(frozen=True)
class Rate:
    selector: Selector


@dataclass(frozen=True)
class Aggregate:
    op: str
    by: tuple[str, ...] | None  # None: over everything
    expr: Expr


@dataclass(frozen=True)
class Quantile:
    q: float
    expr: Expr


Expr = Selector | Rate | Aggregate | Quantile

AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "sum": math.fsum,
    "max": max,
    "min": min,
    "avg": lambda values: math.fsum(values) / len(values),
    "count": lambda values: float(len(values)),
}
_TOKEN = re.compile(
    r"\s*(?:(?P<range>\[\d+[smh]\])|(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"
    r'|(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>=~|!~|!=|[(){},=])|(?P<id>[A-Za-z_:][\w:]*))'
)
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def parse(expr: str) -> Expr:
    """The expression as a tree; ValueError when it is outside the subset."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while expr[pos:].strip():
        match = _TOKEN.match(expr, pos)
        if not match or match.lastgroup is None:
            raise ValueError(f"cannot read {expr[pos:]!r} in {expr!r}")
        tokens.append((match.lastgroup, match[match.lastgroup]))
        pos = match.end()
    parser = _Parser(tokens, expr)
    tree = parser.expr()
    if parser.pos != len(tokens):
        raise ValueError(f"unexpected {tokens[parser.pos][1]!r} in {expr!r}")
    return tree


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], text: str) -> None:
        self.tokens, self.text, self.pos = tokens, text, 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self, kind: str, value: str | None = None) -> str:
        got = self.peek()
        if got[0] != kind or (value is not None and got[1] != value):
            raise ValueError(f"expected {value or kind}, found {got[1]!r} in {self.text!r}")
        self.pos += 1
        return got[1]

    def expr(self) -> Expr:
        name = self.take("id")
        if name in AGGREGATES:
            by = self.grouping()
            self.take("op", "(")
            inner = self.expr()
            self.take("op", ")")
            return Aggregate(name, by if by is not None else self.grouping(), inner)
        if name == "rate":
            self.take("op", "(")
            selector = self.selector(self.take("id"))
            self.take("op", ")")
            if selector.range_seconds is None:
                raise ValueError(f"rate() needs a range in {self.text!r}")
            return Rate(selector)
        if name == "histogram_quantile":
            self.take("op", "(")
            q = float(self.take("num"))
            self.take("op", ",")
            inner = self.expr()
            self.take("op", ")")
            return Quantile(q, inner)
        if self.peek() == ("op", "("):
            raise ValueError(f"function {name}() is not supported (in {self.text!r})")
        selector = self.selector(name)
        if selector.range_seconds is not None:
            raise ValueError(f"a range selector outside rate() in {self.text!r}")
        return selector

    def grouping(self) -> tuple[str, ...] | None:
        if self.peek() != ("id", "by"):
            return None
        self.pos += 1
        self.take("op", "(")
        labels = [self.take("id")]
        while self.peek() == ("op", ","):
            self.pos += 1
            labels.append(self.take("id"))
        self.take("op", ")")
        return tuple(labels)

    def selector(self, name: str) -> Selector:
        matchers = []
        if self.peek() == ("op", "{"):
            self.pos += 1
            while self.peek() != ("op", "}"):
                label = self.take("id")
                op = self.take("op")
                if op not in {"=", "!=", "=~", "!~"}:
                    raise ValueError(f"bad matcher {label}{op} in {self.text!r}")
                value = codecs.decode(self.take("str")[1:-1], "unicode_escape")
                matchers.append((label, op, value))
                if self.peek() == ("op", ","):
                    self.pos += 1
            self.pos += 1
        range_seconds = None
        if self.peek()[0] == "range":
            text = self.take("range")[1:-1]
            range_seconds = float(text[:-1]) * _SECONDS[text[-1]]
        return Selector(name, tuple(matchers), range_seconds)


# ---- evaluation over a recording -------------------------------------------------------------


@dataclass
class Recording:
    times: list[float]
    frames: list[Vector]  # every series of both endpoints at each time, with a `job` label

    @classmethod
    def load(cls, path: Path) -> Recording:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return cls.from_samples(lines)

    @classmethod
    def from_samples(cls, samples: Iterable[dict[str, Any]]) -> Recording:
        times, frames = [], []
        for sample in sorted(samples, key=lambda s: float(s["t"])):
            frame: Vector = {}
            for job in JOBS:
                for family in text_string_to_metric_families(sample.get(job) or ""):
                    for s in family.samples:
                        if s.name.endswith("_created"):
                            continue  # creation times, not values
                        labels = {**s.labels, "__name__": s.name, "job": job}
                        frame[tuple(sorted(labels.items()))] = float(s.value)
            times.append(float(sample["t"]))
            frames.append(frame)
        return cls(times, frames)

    def evaluate(self, expr: Expr, at: int) -> Vector:
        if isinstance(expr, Selector):
            return {k: v for k, v in self.frames[at].items() if _matches(expr, dict(k))}
        if isinstance(expr, Rate):
            return self._rate(expr.selector, at)
        if isinstance(expr, Aggregate):
            groups: dict[Labels, list[float]] = defaultdict(list)
            for labels, value in self.evaluate(expr.expr, at).items():
                keep = expr.by or ()
                groups[tuple((k, v) for k, v in labels if k in keep)].append(value)
            return {k: AGGREGATES[expr.op](values) for k, values in groups.items()}
        return _quantiles(expr.q, self.evaluate(expr.expr, at))

    def _rate(self, selector: Selector, at: int) -> Vector:
        assert selector.range_seconds is not None
        start = self.times[at] - selector.range_seconds
        window = range(bisect.bisect_right(self.times, start), at + 1)
        out: Vector = {}
        for labels in self.evaluate(Selector(selector.name, selector.matchers), at):
            points = [
                (self.times[i], self.frames[i][labels]) for i in window if labels in self.frames[i]
            ]
            if len(points) < 2 or points[-1][0] == points[0][0]:
                continue
            increase = 0.0
            for (_, before), (_, after) in itertools.pairwise(points):
                increase += after - before if after >= before else after  # a reset
            out[tuple((k, v) for k, v in labels if k != "__name__")] = increase / (
                points[-1][0] - points[0][0]
            )
        return out


def _matches(selector: Selector, labels: dict[str, str]) -> bool:
    if labels.get("__name__") != selector.name:
        return False
    for label, op, value in selector.matchers:
        have = labels.get(label, "")
        ok = have == value if op in {"=", "!="} else re.fullmatch(value, have) is not None
        if ok != (op in {"=", "=~"}):
            return False
    return True


def _quantiles(q: float, buckets: Vector) -> Vector:
    """Prometheus' histogram_quantile: linear within the bucket holding the rank."""
    series: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
    for labels, count in buckets.items():
        rest = tuple((k, v) for k, v in labels if k not in {"le", "__name__"})
        series[rest].append((float(dict(labels)["le"]), count))
    out: Vector = {}
    for labels, points in series.items():
        points.sort()
        total = points[-1][1]
        if len(points) < 2 or not math.isinf(points[-1][0]) or total <= 0:
            out[labels] = math.nan
            continue
        rank = q * total
        lower, below = 0.0, 0.0
        for upper, cumulative in points:
            if cumulative >= rank:
                if math.isinf(upper):
                    out[labels] = lower  # the highest finite bound, as Prometheus answers
                else:
                    share = (rank - below) / (cumulative - below) if cumulative > below else 0
                    out[labels] = lower + (upper - lower) * share
                break
            lower, below = upper, cumulative
    return out


# ---- rendering ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetResult:
    panel: str
    expr: str
    series: int  # series with at least one finite point
    points: int


GRAFANA_COLORS = {
    "green": "#73BF69",
    "yellow": "#FADE2A",
    "red": "#F2495C",
    "orange": "#FF9830",
    "blue": "#5794F2",
    "purple": "#B877D9",
}
PALETTE = ["#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9"]
UNITS: dict[str, tuple[float, str]] = {
    "s": (1000.0, "ms"),
    "ops": (1.0, "/s"),
    "reqps": (1.0, "req/s"),
}


def legend(fmt: str, labels: Labels) -> str:
    values = dict(labels)
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values.get(m[1], ""), fmt)


def render(dashboard: dict[str, Any], recording: Recording, out: Path) -> list[TargetResult]:
    """Draws every panel at its grid position; returns what each target produced."""
    panels = sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    elapsed = [t - recording.times[0] for t in recording.times]
    results: list[TargetResult] = []
    with rc_context(
        {
            "figure.facecolor": "#111217",
            "axes.facecolor": "#181b1f",
            "text.color": "#ccccdc",
            "axes.labelcolor": "#ccccdc",
            "xtick.color": "#9fa1a8",
            "ytick.color": "#9fa1a8",
            "axes.edgecolor": "#2c3235",
            "grid.color": "#2c3235",
            "font.size": 8,
        }
    ):
        fig = Figure(figsize=(16, 0.3 * rows + 0.6), layout="constrained")
        title = f"{dashboard.get('title', '')}   (x: seconds since the recording started)"
        fig.suptitle(title, fontsize=12, x=0.015, ha="left")
        grid = fig.add_gridspec(rows, 24)
        for panel in panels:
            pos = panel["gridPos"]
            ax = fig.add_subplot(
                grid[pos["y"] : pos["y"] + pos["h"], pos["x"] : pos["x"] + pos["w"]]
            )
            ax.set_title(panel["title"], loc="left", fontsize=9)
            if panel["type"] == "stat":
                results += _stat(ax, panel, recording)
            else:
                results += _timeseries(ax, panel, recording, elapsed)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    return results


def _timeseries(
    ax: Axes, panel: dict[str, Any], rec: Recording, x: list[float]
) -> list[TargetResult]:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    scale, suffix = UNITS.get(unit, (1.0, ""))
    colors = _fixed_colors(panel)
    results, drawn = [], 0
    for target in panel["targets"]:
        tree = parse(target["expr"])
        lines: dict[Labels, list[float]] = defaultdict(lambda: [math.nan] * len(x))
        for i in range(len(x)):
            for labels, value in rec.evaluate(tree, i).items():
                lines[labels][i] = value * scale
        finite = {k: v for k, v in lines.items() if any(math.isfinite(p) for p in v)}
        for labels, values in sorted(finite.items()):
            name = legend(target.get("legendFormat", ""), labels)
            color = colors.get(name, PALETTE[drawn % len(PALETTE)])
            ax.plot(x, values, label=name, color=color, linewidth=1.2)
            drawn += 1
        points = sum(sum(math.isfinite(p) for p in v) for v in finite.values())
        results.append(TargetResult(panel["title"], target["expr"], len(finite), points))
    ax.grid(True, linewidth=0.5)
    ax.set_ylim(bottom=0)
    ax.set_ylabel(suffix)
    if drawn:  # below the plot, as the dashboard places it
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(0, -0.1),
            fontsize=7,
            frameon=False,
            ncols=min(drawn, 6),
        )
    else:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", transform=ax.transAxes)
    return results


def _stat(ax: Axes, panel: dict[str, Any], rec: Recording) -> list[TargetResult]:
    results, names = [], []
    for target in panel["targets"]:
        vector = rec.evaluate(parse(target["expr"]), len(rec.times) - 1)
        names += [legend(target.get("legendFormat", ""), labels) for labels in sorted(vector)]
        results.append(TargetResult(panel["title"], target["expr"], len(vector), len(vector)))
    ax.axis("off")
    ax.text(
        0.5,
        0.4,
        "     ".join(names) or "No data",
        ha="center",
        va="center",
        fontsize=14,
        transform=ax.transAxes,
    )
    return results


def _fixed_colors(panel: dict[str, Any]) -> dict[str, str]:
    colors = {}
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        if override["matcher"]["id"] != "byName":
            continue
        for prop in override["properties"]:
            if prop["id"] == "color" and "fixedColor" in prop["value"]:
                fixed = prop["value"]["fixedColor"]
                colors[override["matcher"]["options"]] = GRAFANA_COLORS.get(fixed, fixed)
    return colors


# ---- recording ---------------------------------------------------------------------------


def record(urls: dict[str, str], seconds: float, out: Path) -> int:
    """Scrapes each URL once a second into `out`; a failed scrape is recorded as empty."""
    out.parent.mkdir(parents=True, exist_ok=True)
    start, taken = time.time(), 0
    with httpx.Client(timeout=2.0) as client, out.open("w") as sink:
        while time.time() - start < seconds:
            sample: dict[str, Any] = {"t": time.time()}
            for job, url in urls.items():
                try:
                    response = client.get(url)
                    response.raise_for_status()
                    sample[job] = response.text
                except httpx.HTTPError as exc:
                    print(f"{job}: {exc}", flush=True)
                    sample[job] = ""
            sink.write(json.dumps(sample) + "\n")
            sink.flush()  # a recording cut short by Ctrl-C is still usable
            taken += 1
            time.sleep(max(0.0, start + taken - time.time()))
    return taken


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dashboard_png",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="scrape both /metrics endpoints once a second")
    rec.add_argument("--projector", default="http://127.0.0.1:8001/metrics")
    rec.add_argument("--api", default="http://127.0.0.1:8000/metrics")
    rec.add_argument("--seconds", type=float, default=120)
    rec.add_argument("--out", type=Path, required=True)
    ren = commands.add_parser("render", help="draw the dashboard's panels from a recording")
    ren.add_argument(
        "--dashboard", type=Path, default=Path("deploy/grafana/dashboards/jobs-read-model.json")
    )
    ren.add_argument("--recording", type=Path, required=True)
    ren.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    args = parser.parse_args(argv)
    if args.command == "record":
        taken = record({"projector": args.projector, "api": args.api}, args.seconds, args.out)
        print(f"{taken} samples in {args.out}")
        return
    dashboard = json.loads(args.dashboard.read_text())
    results = render(dashboard, Recording.load(args.recording), args.out)
    for r in results:
        print(f"{r.series:3d} series {r.points:6d} points  {r.panel}: {r.expr}")
    empty = [r for r in results if r.series == 0]
    print(f"{args.out}: {len(results)} queries, {len(empty)} without data")


if __name__ == "__main__":
    main()

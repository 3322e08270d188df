"""The report of `bench.run_all`: `latest.json` as a Markdown table and PNG charts.

One row per figure, beside its baseline from the same bench run and their ratio; the charts
(matplotlib) show the same figures. `python -m bench.report [DIR]` renders them again from
`DIR/latest.json` (default `bench/results`) without measuring anything.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.common import RESULTS

X = "\N{MULTIPLICATION SIGN}"
Row = tuple[str, str, str, str]  # what, ours, baseline, ratio
Doc = dict[str, Any]


def result(doc: Doc, name: str) -> dict[str, Any] | None:
    run = doc.get("benches", {}).get(name)
    return None if run is None else dict(run["result"])


def n(value: float) -> str:
    return f"{value:,.0f}"


def times(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}{X}"


def ms(value: float) -> str:
    return f"{value:,.1f} ms"


# --- the table -----------------------------------------------------------------------------------


def each_run(rates: list[float], runs: str) -> str:
    """ " over 3 builds (75,037, 71,261, 74,282)" for a figure made of several runs."""
    return f" over {len(rates)} {runs} ({', '.join(n(rate) for rate in rates)})"


def projector_rows(r: dict[str, Any]) -> list[Row]:
    ours = r["projector_events_per_s"]
    passes = r.get("projector_events_per_s_per_pass", [ours])
    builds = r.get("replay_build_events_per_s_per_pass", [])
    windows = r.get("raw_events_per_s_per_window", [])
    per_pass = r.get("projector_vs_raw_per_pass", [])
    return [
        (
            f"projector, {n(r['events'])} events over {n(r['jobs'])} jobs",
            f"{n(ours)} events/s"
            + (
                f" in {r['projector_window_seconds']:.1f} s" + each_run(passes, "passes")
                if len(passes) > 1
                else ""
            ),
            f"raw aiokafka consumption {n(r['raw_events_per_s'])} events/s"
            + (
                f" in {r['raw_window_seconds']:.1f} s over {len(windows)} windows, one before"
                f" and one after each pass ({', '.join(n(rate) for rate in windows)})"
                if len(windows) > 1
                else ""
            ),
            f"{r['projector_vs_raw']:.2f} of raw"
            + (f" (per pass: {', '.join(f'{x:.2f}' for x in per_pass)})" if per_pass else ""),
        ),
        (
            "",
            "",
            f"naive per-message FastStream handler {n(r['naive_events_per_s'])} events/s",
            f"{r['projector_vs_naive']:.1f}{X}",
        ),
        (
            "`replay build` of the same topic",
            f"{n(r['replay_build_events_per_s'])} events/s"
            + (each_run(builds, "builds") if len(builds) > 1 else ""),
            "the live projector above",
            f"{r['replay_build_vs_projector']:.2f}",
        ),
    ]


# The read bench's targets, in the charts' order.
READ_LABELS = {
    "ours": "ours",  # results from before the hot and cold targets
    "ours_hot": "ours, hot",
    "ours_cold": "ours, cold",
    "bare_hgetall_hot": "bare + HGETALL, hot",
    "bare_hgetall_cold": "bare + HGETALL, cold",
    "bare": "bare",
}


def rounds_of(r: dict[str, Any]) -> str:
    rounds = r["rounds"]
    return f"median of {rounds} round{'s' if rounds > 1 else ''} of {r['seconds_per_run']:g} s"


def load_text(load: dict[str, Any]) -> str:
    return f"{n(load['requests_per_s'])} req/s, p50 {ms(load['p50_ms'])}, p99 {ms(load['p99_ms'])}"


def against(r: dict[str, Any], name: str) -> str:
    """Ratio `name` of the read bench with its target: `0.26x (target ≤ 0.5, met)`."""
    ratio, target = r["ratios"][name], r["targets"]["ratios"][name]
    sign = "≤" if target["at_most"] else "≥"
    verdict = "met" if r["meets"][name] else "missed"
    return f"{times(ratio)} (target {sign} {target['target']:g}, {verdict})"


def read_load_rows(r: dict[str, Any]) -> list[Row]:
    load = r["load"]
    hot = load["ours_hot"]
    each = f"{hot['generator']}, {hot['connections']} connections, {rounds_of(r)}"
    return [
        (
            f"`GET /v1/jobs/{{id}}` hot: one job with 4 artifacts "
            f"({r['presigned_urls_per_response']} URLs) read over and over, {each}",
            load_text(hot),
            "bare FastAPI route + one `HGETALL` (redis.asyncio), same body: "
            + load_text(load["bare_hgetall_hot"]),
            f"p99 {against(r, 'hot_p99_vs_bare_hgetall')}; "
            f"req/s {against(r, 'hot_rps_vs_bare_hgetall')}",
        ),
        (
            f"`GET /v1/jobs/{{id}}` cold: {n(r['cold_jobs'])} such jobs read in turn",
            load_text(load["ours_cold"]),
            f"bare + `HGETALL` of the same {n(r['cold_jobs'])} keys in turn: "
            + load_text(load["bare_hgetall_cold"]),
            f"p99 {against(r, 'cold_p99_vs_bare_hgetall')}; "
            f"req/s {against(r, 'cold_rps_vs_bare_hgetall')}",
        ),
        (
            "",
            "",
            f"bare FastAPI route, same body, no Redis: {load_text(load['bare'])}",
            f"ours hot req/s {r['ours_vs_bare']:.2f} of it",
        ),
    ]


def read_rows(r: dict[str, Any]) -> list[Row]:
    if "ours_hot" in r["load"]:
        rows = read_load_rows(r)
    else:  # a result from before the hot and cold targets: ours (hot) and bare only
        ours, bare = r["load"]["ours"], r["load"]["bare"]
        rows = [
            (
                f"`GET /v1/jobs/{{id}}`, a job with 4 artifacts "
                f"({r['presigned_urls_per_response']} URLs), {ours['generator']}, "
                f"{ours['connections']} connections",
                load_text(ours),
                f"bare FastAPI route, same body: {load_text(bare)}",
                f"{r['ours_vs_bare']:.2f}",
            )
        ]
    for setup, cost in r["presign"].items():
        rows.append(
            (
                f"presigning one URL ({setup})",
                f"{cost['ours_us_per_url']:.1f} µs",
                f"botocore `generate_presigned_url` (s3v4) {cost['botocore_us_per_url']:.0f} µs",
                f"{cost['speedup']:.0f}{X}",
            )
        )
    return rows


def freshness_rows(r: dict[str, Any]) -> list[Row]:
    visible, broker, stored = r["visible"], r["broker_delivery"], r["stored"]
    api = r["stored_to_visible"]
    verdict = "met" if r["meets_target"] else "missed"
    rows: list[Row] = [
        (
            f"freshness: produced → visible over HTTP (`?wait=` long-poll), "
            f"{n(r['produced_events_per_s'])} events/s produced "
            f"(target {n(r['rate_target_events_per_s'])}) in batches every "
            f"{r.get('linger_ms', 5):g} ms, {n(r['jobs_in_flight'])} jobs in flight, "
            f"{n(visible['samples'])} events timed",
            f"p50 {ms(visible['p50_ms'])}, p99 {ms(visible['p99_ms'])}, "
            f"max {ms(visible['max_ms'])}",
            f"broker delivery to a bare aiokafka consumer: p50 {ms(broker['p50_ms'])}, "
            f"p99 {ms(broker['p99_ms'])}",
            f"p99 {r['visible_p99_vs_broker_p99']:.1f}{X} the broker's; "
            f"target p99 ≤ {r['target_p99_ms']:.0f} ms {verdict} "
            f"({r['visible_p99_vs_target']:.1f}{X})",
        ),
        (
            "",
            f"of which produced → merged in Redis: p50 {ms(stored['p50_ms'])}, "
            f"p99 {ms(stored['p99_ms'])}; merged → visible: p50 {ms(api['p50_ms'])}, "
            f"p99 {ms(api['p99_ms'])}",
            "",
            f"merged → visible target p99 ≤ {r.get('stored_to_visible_target_p99_ms', 10):.0f} "
            f"ms {'met' if r.get('meets_stored_to_visible_target') else 'missed'}",
        ),
    ]
    runs = r.get("run_count", 1)
    if runs > 1:
        what, ours, baseline, ratio = rows[0]
        rows[0] = (what, ours, baseline, f"{ratio}; medians of {runs} runs")
    if projector := r.get("projector"):
        fetched, merged = projector["fetch_delay"], projector["batch_merged"]
        rows.append(
            (
                "",
                f"handed to the producer → fetched by the projector: p50 {ms(fetched['p50'])}, "
                f"p99 {ms(fetched['p99'])}; fetched → merged, per batch: p50 "
                f"{ms(merged['p50'])}, p99 {ms(merged['p99'])} (the projector's histograms)",
                "",
                "",
            )
        )
    compared = r.get("broker_at_compare_linger")
    if compared:
        alone = compared["broker_delivery"]
        rows.append(
            (
                "",
                f"broker alone with the producer sending every {compared['linger_ms']:g} ms "
                f"instead of {r['linger_ms']:g} ms: p50 {ms(alone['p50_ms'])}, "
                f"p99 {ms(alone['p99_ms'])}, Tansu using "
                f"{compared['cpu_cores_used'].get('tansu', 0):.2f} cores "
                f"(against {r['broker_phase_cpu_cores_used'].get('tansu', 0):.2f})",
                "",
                "",
            )
        )
    return rows


def replay_rows(r: dict[str, Any]) -> list[Row]:
    return [
        (
            f"`replay verify`, {n(r['jobs'])} jobs",
            f"{n(r['verify_jobs_per_s'])} jobs/s; peak RSS {r['peak_rss_mib_during_verify']} MiB "
            f"(at start {r['rss_mib_at_verify_start']})",
            f"SCAN + pipelined HGETALL of both versions, compared in Python: "
            f"{n(r['naive_verify_jobs_per_s'])} jobs/s",
            f"{r['verify_vs_naive']:.2f}{X}",
        ),
        (
            f"`replay drop`, {n(r['jobs'])} jobs",
            f"{n(r['drop_keys_per_s'])} keys/s; peak RSS {r['peak_rss_mib_during_drop']} MiB",
            "",
            "",
        ),
    ]


def memory_rows(r: dict[str, Any]) -> list[Row]:
    parts = r["breakdown"]
    rows: list[Row] = [
        (
            f"Redis memory per job: {n(r['jobs'])} finished jobs (2 artifacts, a public event), "
            "projected by the projector from real events",
            f"{n(r['bytes_per_job'])} B (`used_memory` delta)",
            f"the data (key + `h`, `o`, `p` values) {n(parts['data_bytes'])} B; "
            f"target {n(r['target_bytes_per_job'])} B",
            f"{r['bytes_per_job_vs_data']:.2f}{X} the data; "
            f"{r['bytes_per_job_vs_target']:.2f} of the target",
        )
    ]
    projected = r.get("projector")
    if projected:
        rss = " → ".join(f"{v:.0f}" for v in projected["projector_rss_mib_at_10_50_100_percent"])
        rows.append(
            (
                f"projector memory, {n(projected['events'])} events over "
                f"{n(projected['jobs'])} jobs",
                f"RSS {rss} MiB at 10 / 50 / 100 % "
                f"({n(projected['projector_events_per_s'])} events/s)",
                "",
                "",
            )
        )
    return rows


def scale_rows(r: dict[str, Any]) -> list[Row]:
    found = r["processes"]
    rows: list[Row] = [
        (
            f"projector processes in one group, {r['partitions']} partitions, "
            f"{n(r['events'])} events drained",
            ", ".join(f"{row['processes']}: {n(row['events_per_s'])}" for row in found)
            + " events/s",
            "1 process",
            ", ".join(f"{row['processes']}: {times(row['vs_1_process'])}" for row in found),
        )
    ]
    for key, label, unit in (
        ("by_batch_size", "batch size (5 events per job)", "events"),
        ("by_jobs_per_batch", "jobs in a batch of 2,000 `stage` events", "jobs"),
    ):
        points = r["cost"][key]
        # Against the projector's default batch (BATCH_MAX_RECORDS 2,000) of 2,000 jobs.
        base = next((p for p in points if p[unit] == 2000), points[-1])
        rows.append(
            (
                f"cost per event by {label}: prepare + merge, in process",
                ", ".join(f"{n(p[unit])}: {p['us_per_event']:.1f} µs" for p in points),
                f"{n(base[unit])} {unit}: {base['us_per_event']:.1f} µs",
                ", ".join(f"{p['us_per_event'] / base['us_per_event']:.2f}" for p in points),
            )
        )
    return rows


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "projector": projector_rows,
    "replay_jobs": replay_rows,
    "read": read_rows,
    "freshness": freshness_rows,
    "memory": memory_rows,
    "scale": scale_rows,
}


def machine_line(doc: Doc) -> str:
    m, git = doc["machine"], doc["git"]
    commit = git["commit"][:12] + (" with local changes" if git["dirty"] else "")
    return (
        f"{m['cpu_model']}, {m['cores_usable']} cores, Python {m['python']}; "
        f"commit {commit}; {doc['generated_at']}"
    )


def markdown(doc: Doc) -> str:
    again = ", ".join(doc.get("measured_again", []))
    lines = [
        f"Measured by `{doc['command']}` on {machine_line(doc)}"
        + (f" ({again} measured again on their own)" if again else "")
        + ". Each figure against its baseline from the same run.",
        "",
    ]
    if doc.get("quick"):
        lines += ["**Quick run: small sizes, to check that the benches run. Not figures.**", ""]
    lines += ["| what | ours | baseline | ratio |", "|---|---|---|---|"]
    for name, rows in ROWS.items():
        found = result(doc, name)
        if found is not None:
            lines += [f"| {' | '.join(row)} |" for row in rows(found)]
    memory = result(doc, "memory")
    if memory is not None:
        lines += ["", "What a stored job is made of:", ""]
        lines += [f"- {said}" for said in memory["drivers"]]
    for name, error in doc.get("failed", {}).items():
        lines += ["", f"**{name} failed**: `{error.splitlines()[0]}`"]
    return "\n".join(lines) + "\n"


# --- the charts ----------------------------------------------------------------------------------


def bar_labels(axes: Axes, values: list[float], texts: list[str]) -> None:
    for y, (value, text) in enumerate(zip(values, texts, strict=True)):
        axes.text(value, y, f" {text}", va="center", fontsize=8)


def projector_chart(r: dict[str, Any], figure: Figure) -> None:
    axes = figure.subplots()
    names = ["raw aiokafka", "replay build", "projector", "naive per-message"]
    values = [
        r["raw_events_per_s"],
        r["replay_build_events_per_s"],
        r["projector_events_per_s"],
        r["naive_events_per_s"],
    ]
    raw = values[0]
    axes.barh(names, values, color=["#999999", "#4c72b0", "#dd8452", "#c44e52"])
    bar_labels(axes, values, [f"{n(v)}/s ({v / raw:.2f} of raw)" for v in values])
    axes.invert_yaxis()
    axes.set_xlim(0, raw * 1.45)
    axes.set_xlabel("events/s")
    axes.set_title(f"Projector, {n(r['events'])} events over {n(r['jobs'])} jobs")


def read_chart(r: dict[str, Any], figure: Figure) -> None:
    rate, latency = figure.subplots(1, 2)
    names = [name for name in READ_LABELS if name in r["load"]]
    loads = [r["load"][name] for name in names]
    labels = [READ_LABELS[name] for name in names]
    colors = [f"C{i}" for i in range(len(names))]
    rates = [load["requests_per_s"] for load in loads]
    rate.barh(labels, rates, color=colors)
    bar_labels(rate, rates, [n(v) for v in rates])
    rate.invert_yaxis()
    rate.set_xlim(0, max(rates) * 1.25)
    rate.set_xlabel("requests/s")
    if "ratios" in r:
        ratios = r["ratios"]
        rate.set_title(
            f"GET /v1/jobs/{{id}}: hot {ratios['hot_rps_vs_bare_hgetall']:.2f}{X}, "
            f"cold {ratios['cold_rps_vs_bare_hgetall']:.2f}{X} bare + HGETALL",
            fontsize=10,
        )
    else:
        rate.set_title(f"GET /v1/jobs/{{id}}: ours = {r['ours_vs_bare']:.2f} of bare")
    width = 0.8 / len(loads)
    for i, (label, load) in enumerate(zip(labels, loads, strict=True)):
        offset = (i - (len(loads) - 1) / 2) * width
        latency.bar(
            [x + offset for x in (0, 1)],
            [load["p50_ms"], load["p99_ms"]],
            width,
            label=label,
            color=colors[i],
        )
    latency.set_xticks([0, 1], ["p50", "p99"])
    latency.set_ylabel("ms")
    latency.legend(fontsize=8)
    rounds = f", {rounds_of(r)}" if "rounds" in r else ""
    latency.set_title(f"latency, {loads[0]['connections']} connections{rounds}", fontsize=10)


def freshness_chart(r: dict[str, Any], figure: Figure) -> None:
    axes = figure.subplots()
    quantiles = list(range(101))
    for key, label in (
        ("broker_delivery", "broker → bare consumer"),
        ("stored", "merged in Redis"),
        ("visible", "visible over HTTP"),
    ):
        axes.plot(r[key]["percentiles_ms"], quantiles, label=label)
    if compared := r.get("broker_at_compare_linger"):
        axes.plot(
            compared["broker_delivery"]["percentiles_ms"],
            quantiles,
            linestyle=":",
            label=f"broker → bare consumer, batches every {compared['linger_ms']:g} ms",
        )
    axes.axvline(r["target_p99_ms"], color="black", linestyle="--", linewidth=1)
    axes.axhline(99, color="grey", linestyle=":", linewidth=1)
    axes.text(r["target_p99_ms"], 3, f" target: p99 ≤ {r['target_p99_ms']:.0f} ms", fontsize=8)
    axes.set_xlabel("ms since produced")
    axes.set_ylabel("% of events")
    axes.set_title(
        f"Freshness at {n(r['produced_events_per_s'])} events/s: "
        f"visible p99 {ms(r['visible']['p99_ms'])}"
    )
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)


def scale_chart(r: dict[str, Any], figure: Figure) -> None:
    procs, sizes, jobs = figure.subplots(1, 3)
    found = r["processes"]
    counts = [row["processes"] for row in found]
    rates = [row["events_per_s"] for row in found]
    procs.plot(counts, rates, marker="o", label="measured")
    one = next((row["events_per_s"] for row in found if row["processes"] == 1), None)
    if one:
        procs.plot(counts, [one * c for c in counts], linestyle="--", color="grey", label="linear")
    procs.set_ylim(bottom=0)
    procs.set_xticks(counts)
    procs.set_xlabel("projector processes")
    procs.set_ylabel("events/s")
    procs.set_title(f"{r['partitions']} partitions")
    procs.legend()
    for axes, key, unit, title in (
        (sizes, "by_batch_size", "events", "batch size (events)"),
        (jobs, "by_jobs_per_batch", "jobs", "jobs in a batch of 2,000 stage events"),
    ):
        points = r["cost"][key]
        labels = [n(p[unit]) for p in points]
        prepare = [p["prepare_us_per_event"] for p in points]
        merge = [p["merge_us_per_event"] for p in points]
        axes.bar(labels, prepare, label="prepare")
        axes.bar(labels, merge, bottom=prepare, label="merge")
        axes.set_xlabel(title)
        axes.set_ylabel("µs per event")
        axes.legend()
    figure.suptitle("Scaling out, and the cost per event by batch shape")


def memory_chart(r: dict[str, Any], figure: Figure) -> None:
    axes = figure.subplots()
    parts = r["breakdown"]
    pieces = [("key name", parts["key_name_bytes"])]
    pieces += [(f"`{name}`", size) for name, size in parts["field_value_bytes"].items()]
    pieces.append(("Redis structures", r["bytes_per_job"] - parts["data_bytes"]))
    left = 0.0
    for label, size in pieces:
        axes.barh(["per job"], [size], left=left, label=f"{label} {n(size)} B")
        left += size
    axes.axvline(r["target_bytes_per_job"], color="black", linestyle="--", linewidth=1)
    axes.text(r["target_bytes_per_job"], 0.45, " target", fontsize=8)
    axes.set_xlabel("bytes")
    axes.set_title(f"Redis memory per job: {n(r['bytes_per_job'])} B")
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3)


CHARTS: dict[str, tuple[Callable[[dict[str, Any], Figure], None], tuple[float, float]]] = {
    "projector": (projector_chart, (8, 3.2)),
    "read": (read_chart, (11, 4)),
    "freshness": (freshness_chart, (7, 4)),
    "scale": (scale_chart, (13, 4)),
    "memory": (memory_chart, (8, 2.8)),
}


def render(doc: Doc, out: Path) -> list[Path]:
    """Write latest.md and one PNG per bench that has figures; returns the paths."""
    written = [out / "latest.md"]
    written[0].write_text(markdown(doc))
    for name, (draw, size) in CHARTS.items():
        found = result(doc, name)
        if found is None:
            continue
        figure = plt.figure(figsize=size, layout="constrained")
        try:
            draw(found, figure)
            path = out / f"{name}.png"
            figure.savefig(path, dpi=110)
            written.append(path)
        finally:
            plt.close(figure)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("dir", type=Path, nargs="?", default=RESULTS)
    args = parser.parse_args()
    for path in render(json.loads((args.dir / "latest.json").read_text()), args.dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

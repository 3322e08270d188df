"""`make bench`: every benchmark, one after the other, then the report.

Each bench of this folder runs in a process of its own (so that one's heap, garbage-collector
settings or crash do not touch the next; `replay_jobs` reads its own RSS) and on a stack of
its own (`devstack`: Tansu, redis-server and the moto server on free ports), at the sizes
the README reports. Their figures - each against its baseline measured in the same bench
run - go into `bench/results/latest.json` with the machine, the commit and the time;
`bench.report` then writes `latest.md` (the README's table) and the charts beside it.

`--quick` (`make bench-quick`, run by CI) runs the same code at small sizes into
`bench/results/quick/`: it shows that every bench still runs; its figures mean nothing.
`--only NAME...` runs some benches and keeps the others' last figures in the file.

    python -m bench.run_all [--quick] [--only freshness memory]
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from bench.common import REPO, RESULTS, git_commit, machine


class Bench(Protocol):
    """What run_all needs of a bench module."""

    FULL: list[str]
    QUICK: list[str]

    def parser(self) -> argparse.ArgumentParser: ...

    def measure(self, args: argparse.Namespace) -> dict[str, Any]: ...


# In this order: the read path first, while nothing else has run yet.
BENCHES = ("read", "projector", "replay_jobs", "freshness", "memory", "scale")


def load(name: str) -> Bench:
    """Imported when needed: a bench's process holds its own module only (no matplotlib),
    since some benches read their own memory."""
    return cast(Bench, importlib.import_module(f"bench.{name}"))


def run_one(name: str, quick: bool) -> dict[str, Any]:
    """Run one bench in a child process (`--bench NAME --to FILE`) and return its figures."""
    bench = load(name)
    argv = bench.QUICK if quick else bench.FULL
    print(f"\n=== {name} {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-run-") as folder:
        to = Path(folder) / "result.json"
        command = [sys.executable, "-m", "bench.run_all", "--bench", name, "--to", str(to)]
        done = subprocess.run([*command, *(["--quick"] if quick else [])], cwd=REPO)
        found = json.loads(to.read_text()) if to.exists() else {}
    if done.returncode != 0 or "result" not in found:
        raise RuntimeError(found.get("error") or f"exited with {done.returncode}")
    return {
        "result": found["result"],
        "argv": argv,
        "seconds": round(time.perf_counter() - started, 1),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def child(name: str, quick: bool, to: Path) -> None:
    """The child's side of `run_one`: measure, and write the figures or the error to `to`."""
    bench = load(name)
    try:
        result = bench.measure(bench.parser().parse_args(bench.QUICK if quick else bench.FULL))
    except BaseException as error:
        to.write_text(json.dumps({"error": f"{type(error).__name__}: {error}"[:2000]}))
        raise
    to.write_text(json.dumps({"result": result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: does it all run?")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), help="run only these")
    parser.add_argument("--out", type=Path, help="default bench/results (quick: .../quick)")
    parser.add_argument("--bench", choices=list(BENCHES), help=argparse.SUPPRESS)
    parser.add_argument("--to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bench:
        child(args.bench, args.quick, args.to)
        return
    out: Path = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "latest.json"

    doc: dict[str, Any] = {"benches": {}, "failed": {}}
    if args.only and path.exists():
        doc = json.loads(path.read_text())
    # Benches measured again on their own since the last whole run (`--only`), for the report.
    doc["measured_again"] = (
        sorted({*doc.get("measured_again", []), *args.only}) if args.only else []
    )
    doc |= {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make bench-quick" if args.quick else "make bench",
        "quick": args.quick,
        "git": git_commit(),
        "machine": machine(),
    }
    for name in BENCHES:
        if args.only and name not in args.only:
            continue
        doc["failed"].pop(name, None)
        try:
            doc["benches"][name] = run_one(name, args.quick) | {"git": doc["git"]}
        except RuntimeError as error:  # the others still run; the exit status says it
            doc["benches"].pop(name, None)
            doc["failed"][name] = str(error)
        path.write_text(json.dumps(doc, indent=2) + "\n")  # what is done is kept

    from bench import report  # matplotlib: in this process only

    written = report.render(doc, out)
    print(f"\nwrote {path}")
    for written_path in written:
        print(f"wrote {written_path}")
    print((out / "latest.md").read_text())
    if doc["failed"]:
        print(f"FAILED: {', '.join(doc['failed'])}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

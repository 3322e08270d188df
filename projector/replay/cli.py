"""`python -m projector replay <command>`: the operator's commands, one module each.

Settings come from the environment, as for `python -m projector run` (KAFKA_*, REDIS_URL,
ARTIFACT_*). Exit status: 0 done (or equal), 1 refused or different, 2 configuration or usage
error, 3 `job` would undo newer data.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from contracts.settings import VersionName, load_or_exit
from projector.preflight import check_or_exit
from projector.settings import ProjectorSettings

Command = Callable[[ProjectorSettings, argparse.Namespace], Awaitable[int]]


def _version(text: str) -> str:
    from pydantic import TypeAdapter, ValidationError

    try:
        checked: str = TypeAdapter(VersionName).validate_python(text)
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be 1-32 letters, digits, '_' or '-' (e.g. v2)"
        ) from None
    return checked


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_parser(commands: Any) -> None:
    replay = commands.add_parser(
        "replay",
        help="rebuild, verify, promote, roll back, drop projection versions; repair a job",
        description=(
            "Rebuild a projection version beside the live one, compare it, switch reads to "
            "it and back, and remove a retired one."
        ),
        epilog=(
            "exit status: 0 done (or equal), 1 refused or different, 2 configuration or usage "
            "error, 3 `job` would undo newer data."
        ),
    )
    sub = replay.add_subparsers(dest="replay_command", required=True)

    build = sub.add_parser(
        "build",
        help="consume the topic into a version up to today's end offsets, then exit",
        description=(
            "Consume KAFKA_TOPIC into version V with group <KAFKA_GROUP_ID>.V up to the end "
            "offsets taken at start, commit, and exit; `PROJECTION_VERSION=V python -m "
            "projector run` then continues live from there. Poison records are counted, "
            "not dead-lettered again."
        ),
    )
    build.add_argument("--version", required=True, type=_version, help="the version to build")
    build.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at offset 0 even where the group has committed offsets",
    )

    sub.add_parser(
        "status",
        help="versions in Redis, their job counts and group lag, and which one is active",
    )

    verify = sub.add_parser(
        "verify",
        help="compare two versions job by job; exit 1 with the differing jobs",
        description=(
            "Compare versions A and B job by job (digests first, then a readable diff). Jobs "
            "whose partition still lags on either side are reported apart, as in flight."
        ),
    )
    verify.add_argument("--from", dest="source", required=True, type=_version, metavar="A")
    verify.add_argument("--to", dest="target", required=True, type=_version, metavar="B")
    verify.add_argument("--tenant", help="only this tenant's jobs")
    verify.add_argument(
        "--sample", type=_positive, metavar="N", help="only about N jobs of A (and B's extras)"
    )

    switch_guards = (
        "Refused, unless --force, when the version has no jobs, was built from a topic that "
        "retention had cut, misses jobs of the active version (replay verify), has no running "
        "projector, or lags by more than --max-lag events."
    )
    promote = sub.add_parser(
        "promote",
        help="make a version the one the api reads (remembers the previous one)",
        description=f"Switch readers to VERSION at once. {switch_guards}",
    )
    promote.add_argument("version", type=_version)
    rollback = sub.add_parser(
        "rollback",
        help="make the previously active version active again",
        description=f"Switch readers back to the version promote replaced. {switch_guards}",
    )
    for switch in (promote, rollback):
        switch.add_argument(
            "--max-lag",
            type=int,
            default=1000,
            metavar="N",
            help="refuse when the version's group lags by more than N events (default 1000)",
        )
        switch.add_argument(
            "--force", action="store_true", help="switch anyway, saying what is overridden"
        )

    drop = sub.add_parser(
        "drop",
        help="delete a version's keys (never the active version)",
        description=(
            "Delete job:VERSION:* in batches (SCAN + UNLINK). Refused for the active version, "
            "and, unless --force, for a version a running projector still writes; the active "
            "version is checked again before each batch."
        ),
    )
    drop.add_argument("version", type=_version)
    drop.add_argument("--force", action="store_true", help="drop although a projector writes it")
    drop.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")

    job = sub.add_parser(
        "job",
        help="recompute one job from the topic, show the diff against Redis, write it",
        description=(
            "Recompute one job from its key's partition and compare it with Redis. Writing "
            "replaces the stored job, so it is refused (exit 3) when Redis holds anything newer "
            "than the topic gave - events of this job on another partition: a mis-keyed "
            "producer? --scan-all-partitions looks for them. It asks on a terminal; --yes "
            "writes without asking."
        ),
    )
    job.add_argument("--tenant", required=True)
    job.add_argument("--id", dest="job_id", required=True, help="the job id (a ULID)")
    job.add_argument("--version", type=_version, help="default: the active version")
    job.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")
    job.add_argument("--yes", action="store_true", help="write without asking")
    job.add_argument(
        "--scan-all-partitions",
        action="store_true",
        help="read every partition, not only the key's (finds a mis-keyed producer's events)",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_or_exit(ProjectorSettings)
    command = _commands()[args.replay_command]

    async def main() -> int:
        await check_or_exit(settings.kafka, settings.redis_url)
        return await command(settings, args)

    return asyncio.run(main())


def _commands() -> dict[str, Command]:
    from projector.replay import build, drop, promote, repair, status, verify

    return {
        "build": build.command,
        "status": status.command,
        "verify": verify.command,
        "promote": promote.promote_command,
        "rollback": promote.rollback_command,
        "drop": drop.command,
        "job": repair.command,
    }

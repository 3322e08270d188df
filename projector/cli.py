"""Command line of the projector process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from contracts.settings import load_or_exit
from projector.batch import tune_garbage_collector
from projector.preflight import check_or_exit
from projector.replay import cli as replay_cli
from projector.settings import ProjectorSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m projector", description="Fold job events from Kafka into Redis."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="consume KAFKA_TOPIC into projection PROJECTION_VERSION")
    replay_cli.add_parser(commands)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "replay":
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
        sys.exit(replay_cli.run(args))
    settings = load_or_exit(ProjectorSettings)
    asyncio.run(run(settings))


async def run(settings: ProjectorSettings) -> None:
    from projector.app import create_app

    await check_or_exit(settings.kafka_bootstrap_servers, settings.redis_url)
    app = create_app(settings)
    tune_garbage_collector()
    await app.run()

"""Command line of the projector process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from contracts.logs import configure_logging
from contracts.settings import config_error, load_or_exit
from contracts.tracing import configure_tracing
from projector.batch import tune_garbage_collector
from projector.preflight import check_or_exit, listen_or_exit, projector_problems
from projector.replay import cli as replay_cli
from projector.settings import ProjectorSettings

RUN_DESCRIPTION = """\
Consume KAFKA_TOPIC with group <KAFKA_GROUP_ID>.<PROJECTION_VERSION>, fold each job's events
and merge them into Redis; commit offsets once the merges (and dead letters) are confirmed.
Settings come from the environment (README "Configuration"; .env.example lists them all).

It refuses to start, with one line naming the setting, when: a setting is invalid; the
broker or Redis does not answer or refuses the credentials or TLS; KAFKA_TOPIC or its
dead-letter topic <KAFKA_TOPIC>.dlq does not exist; Redis's maxmemory-policy evicts keys
(unless REDIS_ALLOW_EVICTION=true); fewer replicas than REDIS_MIN_REPLICAS are connected;
the HTTP port is taken.

/readyz (PROJECTOR_HTTP_PORT) answers 503 naming what fails: broker, redis, writes (a batch
is being retried), dead_letters (a partition waits because its dead letter cannot be
written); 200 otherwise, with its partitions, or "idle" when it has none.

exit status: 0 stopped by a signal, 1 failed while starting the consumer, 2 refused to start
(configuration or a dependency, as above)."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m projector", description="Fold job events from Kafka into Redis."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "run",
        help="consume KAFKA_TOPIC into projection PROJECTION_VERSION",
        description=RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay_cli.add_parser(commands)
    args = parser.parse_args(argv)

    configure_logging()
    if args.command == "replay":
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
        sys.exit(replay_cli.run(args))
    settings = load_or_exit(ProjectorSettings)
    asyncio.run(run(settings))


async def run(settings: ProjectorSettings) -> None:
    import uvicorn

    from projector.app import create_app

    await check_or_exit(settings.kafka, settings.redis_url)
    if problems := await projector_problems(settings):
        config_error("; ".join(problems))
    listening = listen_or_exit(settings.projector_http_host, settings.projector_http_port)
    configure_tracing("jobs-projector")
    app = create_app(settings)
    tune_garbage_collector()
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,  # our logging set-up stays in charge
        access_log=False,  # probes and scrapes every few seconds would drown the log
    )
    server = uvicorn.Server(config)
    await server.serve(sockets=[listening])
    if not server.started:  # the lifespan failed (uvicorn logged why)
        sys.exit(1)

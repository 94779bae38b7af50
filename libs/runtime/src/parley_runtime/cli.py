"""The command line every gRPC service shares.

parley-<service>                                    serve until SIGTERM
parley-<service> migrate upgrade|downgrade [rev]    services with a database only
parley-<service> <command> ...                      a service's own commands (Command)
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from parley_runtime.grpc_server import Wiring, run, serve
from parley_runtime.logs import setup_logging
from parley_runtime.settings import ServiceSettings, load_settings
from parley_runtime.telemetry import setup_tracing

S = TypeVar("S", bound=ServiceSettings)


@dataclass(frozen=True)
class Migrations:
    """A service's Alembic folder and its own version table."""

    location: Path
    version_table: str


@dataclass(frozen=True)
class Command(Generic[S]):
    """A command of a service's own (an operator's task): ``arguments`` adds its options to
    its parser; ``run`` does it with the service's settings and the parsed options, and
    returns the exit status."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[S, argparse.Namespace], Coroutine[Any, Any, int]]


def service_main(
    service: str,
    settings_type: type[S],
    build: Callable[[S], Awaitable[Wiring]],
    migrations: Migrations | None = None,
    own: Sequence[Command[S]] = (),
) -> None:
    """Parse the command line, then serve ``build(settings)``, run migrations or one of the
    service's ``own`` commands."""
    parser = argparse.ArgumentParser(prog=f"parley-{service}")
    commands = parser.add_subparsers(dest="command")
    if migrations is not None:
        migrate = commands.add_parser("migrate", help="apply or revert the migrations")
        migrate.add_argument("direction", choices=["upgrade", "downgrade"])
        migrate.add_argument("revision", nargs="?")
    for command in own:
        command.arguments(commands.add_parser(command.name, help=command.help))
    args = parser.parse_args()
    settings = load_settings(settings_type, service)
    setup_logging(service, settings.log_level, settings.log_format)
    for command in own:
        if args.command == command.name:
            raise SystemExit(asyncio.run(command.run(settings, args)))
    if migrations is not None and args.command == "migrate":
        # Imported here: services without a database do not install the SQL stack.
        from parley_runtime import db

        step = db.upgrade if args.direction == "upgrade" else db.downgrade
        revision = args.revision or ("head" if args.direction == "upgrade" else "base")
        url: str = getattr(settings, "database_url")  # noqa: B009
        asyncio.run(step(migrations.location, url, migrations.version_table, revision))
        return
    setup_tracing(
        service,
        settings.otel_exporter_otlp_endpoint,
        settings.otel_traces_sampler_ratio,
        settings.otel_python_disabled_instrumentations,
    )

    async def serve_built() -> None:
        wiring = await build(settings)
        await serve(
            service, settings, wiring.registrations, on_stop=wiring.close, ready=wiring.ready
        )

    run(serve_built)

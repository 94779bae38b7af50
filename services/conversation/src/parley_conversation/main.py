"""conversation's entry point.

parley-conversation                                 serve
parley-conversation migrate upgrade|downgrade [revision]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from parley.conversation.v1 import conversation_pb2_grpc as pb_grpc
from parley_conversation.adapters.peers import Peers
from parley_conversation.adapters.store import ConversationStore
from parley_conversation.api import ConversationServicer
from parley_conversation.settings import Settings
from parley_conversation.turn import TurnRunner
from parley_runtime import db
from parley_runtime.grpc_server import Registration, Wiring, run, serve
from parley_runtime.logs import setup_logging
from parley_runtime.settings import load_settings
from parley_runtime.telemetry import setup_tracing

SERVICE = "parley.conversation.v1.ConversationService"
MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_conversation"


async def build(settings: Settings) -> Wiring:
    """Store, peers and the turn runner wired into the servicer."""
    if settings.db_auto_migrate:
        await db.upgrade(MIGRATIONS, settings.database_url, VERSION_TABLE)
    engine = db.create_engine(settings.database_url)
    store = ConversationStore(engine)
    peers = Peers(
        settings.llm_router_addr, settings.retrieval_addr, settings.retrieval_timeout_seconds
    )
    servicer = ConversationServicer(store, TurnRunner(store, peers, settings), settings)

    async def close() -> None:
        await peers.close()
        await engine.dispose()

    return Wiring(
        registrations=[
            Registration(
                SERVICE, lambda s: pb_grpc.add_ConversationServiceServicer_to_server(servicer, s)
            )
        ],
        close=close,
    )


async def _serve(settings: Settings) -> None:
    wiring = await build(settings)
    await serve("conversation", settings, wiring.registrations, on_stop=wiring.close)


def main() -> None:
    parser = argparse.ArgumentParser(prog="parley-conversation")
    commands = parser.add_subparsers(dest="command")
    migrate = commands.add_parser("migrate", help="apply or revert migrations")
    migrate.add_argument("direction", choices=["upgrade", "downgrade"])
    migrate.add_argument("revision", nargs="?")
    args = parser.parse_args()
    settings = load_settings(Settings, "conversation")
    setup_logging("conversation", settings.log_level)
    if args.command == "migrate":
        step = db.upgrade if args.direction == "upgrade" else db.downgrade
        revision = args.revision or ("head" if args.direction == "upgrade" else "base")
        asyncio.run(step(MIGRATIONS, settings.database_url, VERSION_TABLE, revision))
        return
    setup_tracing(
        "conversation", settings.otel_exporter_otlp_endpoint, settings.otel_traces_sampler_ratio
    )
    run(lambda: _serve(settings))


if __name__ == "__main__":
    main()

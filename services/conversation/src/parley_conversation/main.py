"""conversation's entry point.

parley-conversation                                 serve until SIGTERM
parley-conversation migrate upgrade|downgrade [revision]
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from parley.conversation.v1 import conversation_pb2_grpc as pb_grpc
from parley_conversation.adapters.llm_router import LlmRouter
from parley_conversation.adapters.retrieval import Retrieval
from parley_conversation.adapters.store import ConversationStore
from parley_conversation.api import ConversationServicer
from parley_conversation.settings import Settings
from parley_conversation.turn import TurnRunner
from parley_runtime import db
from parley_runtime.cli import Migrations, service_main
from parley_runtime.grpc_server import Registration, Wiring

log = logging.getLogger("parley.conversation")

SERVICE = "parley.conversation.v1.ConversationService"
MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_conversation"


async def build(settings: Settings) -> Wiring:
    """The store, llm-router, retrieval and the turn runner wired into the servicer."""
    if settings.db_auto_migrate:
        await db.upgrade(MIGRATIONS, settings.database_url, VERSION_TABLE)
    engine = db.create_engine(settings.database_url)
    store = ConversationStore(engine, settings.owner, settings.turn_lease_seconds)
    # Answers a previous process of this replica left in progress end now; others' once
    # their lease runs out.
    closed = await store.close_interrupted(include_own=True)
    if closed:
        log.warning("closed answers left in progress", extra={"count": closed})
    sweeper = asyncio.create_task(_close_interrupted_every(store, settings.turn_lease_seconds / 2))
    router = LlmRouter(
        settings.llm_router_addr,
        settings.turn_timeout_seconds,
        aliases_ttl=settings.model_aliases_ttl_seconds,
        check_timeout=settings.model_check_timeout_seconds,
    )
    retrieval = Retrieval(
        settings.retrieval_addr,
        settings.retrieval_timeout_seconds,
        mode=settings.retrieval_mode,
        score_threshold=settings.retrieval_score_threshold,
    )
    turns = TurnRunner(store, router, retrieval, settings)
    servicer = ConversationServicer(store, turns, router, settings)

    async def close() -> None:
        sweeper.cancel()
        await router.close()
        await retrieval.close()
        await engine.dispose()

    return Wiring(
        registrations=[
            Registration(
                SERVICE, lambda s: pb_grpc.add_ConversationServiceServicer_to_server(servicer, s)
            )
        ],
        close=close,
        ready=db.readiness(engine),
    )


async def _close_interrupted_every(store: ConversationStore, seconds: float) -> None:
    """Close the answers of replicas that died, for as long as this one runs."""
    while True:
        await asyncio.sleep(seconds)
        try:
            closed = await store.close_interrupted()
        except Exception:
            log.warning("could not close interrupted answers", exc_info=True)
            continue
        if closed:
            log.warning("closed answers whose writer is gone", extra={"count": closed})


def main() -> None:
    service_main("conversation", Settings, build, Migrations(MIGRATIONS, VERSION_TABLE))


if __name__ == "__main__":
    main()

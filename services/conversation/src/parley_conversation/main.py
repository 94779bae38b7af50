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
from parley_conversation.adapters.memory_store import MemoryStore
from parley_conversation.adapters.retrieval import Retrieval, RetrievalMemories
from parley_conversation.adapters.store import ConversationStore
from parley_conversation.adapters.tasks import TaskStore
from parley_conversation.api import ConversationServicer
from parley_conversation.background import Handler, Pacing, TaskKind, Worker
from parley_conversation.memory import Memories, MemoryPolicy
from parley_conversation.settings import Settings, shares_of
from parley_conversation.summaries import Summariser
from parley_conversation.titles import Titler
from parley_conversation.tools import built_in
from parley_conversation.turn import TurnRunner
from parley_runtime import db, telemetry
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
    store = ConversationStore(
        engine,
        settings.owner,
        settings.turn_lease_seconds,
        settings.turn_timeout_seconds + settings.turn_lease_seconds,
    )
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
    memory_index = RetrievalMemories(settings.retrieval_addr, settings.retrieval_timeout_seconds)
    memories = Memories(
        MemoryStore(engine),
        memory_index,
        router,
        MemoryPolicy(
            model=settings.memory_model,
            extraction_timeout=settings.background_call_timeout_seconds,
            max_per_user=settings.memory_max_per_user,
            max_facts_per_turn=settings.memory_max_facts_per_turn,
            recall_min_score=settings.memory_recall_min_score,
            duplicate_score=settings.memory_duplicate_score,
        ),
    )
    tasks = TaskStore(engine, settings.owner, settings.background_lease_seconds)
    tools = built_in(
        settings.tool_names,
        retrieval,
        top_k=settings.retrieval_top_k,
        fetch_hosts=settings.http_fetch_hosts,
        fetch_timeout=settings.tool_timeout_seconds,
        fetch_max_bytes=settings.http_fetch_max_bytes,
    )
    turns = TurnRunner(store, router, retrieval, settings, tools, memories=memories, tasks=tasks)
    worker = Worker(tasks, background_handlers(settings, store, router, turns), pacing(settings))
    turns.wake = worker.wake  # a stored turn's work starts here at once
    worker.start()
    servicer = ConversationServicer(store, turns, router, settings, memories=memories)

    async def close() -> None:
        await worker.stop()
        sweeper.cancel()
        await router.close()
        await retrieval.close()
        await memory_index.close()
        await db.dispose(engine)

    return Wiring(
        registrations=[
            Registration(
                SERVICE, lambda s: pb_grpc.add_ConversationServiceServicer_to_server(servicer, s)
            )
        ],
        close=close,
        ready=db.readiness(engine),
    )


def pacing(settings: Settings) -> Pacing:
    return Pacing(
        concurrency=settings.background_concurrency,
        poll_seconds=settings.background_poll_seconds,
        lease_seconds=settings.background_lease_seconds,
        max_attempts=settings.background_max_attempts,
        retry_seconds=settings.background_retry_seconds,
    )


def background_handlers(
    settings: Settings, store: ConversationStore, router: LlmRouter, turns: TurnRunner
) -> dict[TaskKind, Handler]:
    """What runs each kind of background task."""
    summariser = Summariser(
        store,
        router,
        shares_of(settings),
        model=settings.summary_model,
        history_max_messages=settings.history_max_messages,
        timeout=settings.background_call_timeout_seconds,
        count_timeout=settings.count_tokens_timeout_seconds,
    )
    titler = Titler(
        store, router, model=settings.title_model, timeout=settings.background_call_timeout_seconds
    )
    return {
        TaskKind.SUMMARY: summariser.run,
        TaskKind.TITLE: titler.run,
        TaskKind.MEMORY: turns.remember,
    }


async def _close_interrupted_every(store: ConversationStore, seconds: float) -> None:
    """Close the answers of replicas that died, for as long as this one runs."""
    while True:
        await asyncio.sleep(seconds)
        try:
            with telemetry.untraced():  # a trace every few seconds would bury the turns'
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

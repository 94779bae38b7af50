"""A conversation replica as ``main.py`` wires it (store, peers' clients, turn runner and
background worker), on a given database and fake peers, for the tests of context, summaries,
follow-ups, titles, background work and concurrency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from parley_conversation.adapters.llm_router import LlmRouter
from parley_conversation.adapters.retrieval import Retrieval
from parley_conversation.adapters.store import ConversationStore
from parley_conversation.adapters.tasks import TaskStore
from parley_conversation.background import Worker
from parley_conversation.events import TurnEvent
from parley_conversation.main import MIGRATIONS, VERSION_TABLE, background_handlers, pacing
from parley_conversation.settings import Settings
from parley_conversation.turn import TurnRunner
from parley_runtime import db
from parley_runtime.context import Principal

from .fakes import Peers

ANN = Principal("acme", "ann")


@dataclass
class Replica:
    runner: TurnRunner
    store: ConversationStore
    tasks: TaskStore
    worker: Worker
    settings: Settings

    async def send(
        self, cid: str, content: str, key: str | None = None, model: str = ""
    ) -> list[TurnEvent]:
        """A send as the API makes it: begun, then its events read to the end."""
        begun = await self.runner.begin(ANN, cid, content, key, model)
        return [event async for event in self.runner.run(begun, model)]


@asynccontextmanager
async def replica(
    url: str, peers: Peers, name: str = "replica-a", *, work: bool = True, **settings: Any
) -> AsyncIterator[Replica]:
    """A replica named ``name`` on ``url``; its worker runs background tasks when ``work``."""
    await db.upgrade(MIGRATIONS, url, VERSION_TABLE)
    config = Settings(
        grpc_port=0,
        database_url=url,
        llm_router_addr=peers.address,
        retrieval_addr=peers.address,
        replica_id=name,
        **settings,
    )
    engine = db.create_engine(url)
    store = ConversationStore(
        engine,
        name,
        config.turn_lease_seconds,
        config.turn_timeout_seconds + config.turn_lease_seconds,
    )
    router = LlmRouter(peers.address, 30.0, aliases_ttl=config.model_aliases_ttl_seconds)
    retrieval = Retrieval(peers.address, 5.0, score_threshold=config.retrieval_score_threshold)
    tasks = TaskStore(engine, name, config.background_lease_seconds)
    runner = TurnRunner(store, router, retrieval, config, tasks=tasks)
    worker = Worker(tasks, background_handlers(config, store, router, runner), pacing(config))
    runner.wake = worker.wake
    if work:
        worker.start()
    try:
        yield Replica(runner, store, tasks, worker, config)
    finally:
        await worker.stop()
        await router.close()
        await retrieval.close()
        await engine.dispose()

"""Durable work that runs after a turn is stored, off the turn's path: rolling summaries,
titles and memory extraction.

A task is queued in the database in the same transaction that stores the answer it follows
(``adapters/tasks.py``), so a crash never loses it, and run by whichever replica claims it
first: this one at once (``Worker.wake``), the others within ``BACKGROUND_POLL_SECONDS``. A
running task holds a lease its worker renews (every third of ``BACKGROUND_LEASE_SECONDS``);
when its process dies (kill -9), the lease runs out and any replica takes it over. A task that
fails is tried again after a pause that doubles (``BACKGROUND_RETRY_SECONDS``, with jitter),
up to ``BACKGROUND_MAX_ATTEMPTS`` tries; then it is kept ``failed`` with its last error, and
logged. A task whose conversation is gone is done. A turn never waits for a task: it uses the
summary there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from parley_conversation.metrics import BACKGROUND_TASKS
from parley_runtime.context import Principal
from parley_runtime.errors import NotFound

if TYPE_CHECKING:
    from parley_conversation.adapters.tasks import TaskStore

log = logging.getLogger("parley.conversation.background")

T = TypeVar("T")

MAX_PAUSE_SECONDS = 600.0
# How long a stopping worker lets its running tasks end on their own before it stops them
# (most of a task's time is a model call, which stops cleanly; a database statement cut in
# the middle can leave SQLite's write lock held until the process ends), and how long it
# tries to put back those it stopped (else their leases run out).
DRAIN_SECONDS = 2.0
RELEASE_SECONDS = 2.0


class TaskKind(enum.StrEnum):
    """What a background task does; the values are what the database stores."""

    SUMMARY = "summary"
    TITLE = "title"
    MEMORY = "memory"


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """Work a turn asks for: its kind and subject (the conversation; the answer for memory)."""

    kind: TaskKind
    conversation_id: str
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Task:
    """A task claimed to run: for whom, on what, and which try this is (from 1)."""

    id: str
    kind: TaskKind
    who: Principal
    conversation_id: str
    message_id: str | None
    attempts: int


Handler = Callable[[Task], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Pacing:
    """How a worker runs tasks (the ``BACKGROUND_*`` settings)."""

    concurrency: int = 2
    poll_seconds: float = 1.0
    lease_seconds: float = 60.0
    max_attempts: int = 5
    retry_seconds: float = 2.0


def pause_after(attempts: int, base: float) -> float:
    """The pause before try ``attempts + 1``: doubling from ``base``, with full jitter in
    its upper half, at most ``MAX_PAUSE_SECONDS``."""
    ceiling = min(base * 2 ** max(attempts - 1, 0), MAX_PAUSE_SECONDS)
    return float(ceiling * random.uniform(0.5, 1.0))


class Worker:
    """Claims and runs background tasks with their kind's handler (see the module
    docstring), up to ``pacing.concurrency`` at once."""

    def __init__(
        self, tasks: TaskStore, handlers: Mapping[TaskKind, Handler], pacing: Pacing
    ) -> None:
        self.tasks = tasks
        self.handlers = dict(handlers)
        self.pacing = pacing
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False

    def start(self) -> None:
        if self._loop is None and self.pacing.concurrency > 0:
            self._loop = asyncio.create_task(self._claim_forever())

    def wake(self) -> None:
        """Look for tasks now (one was just queued here)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop claiming (a claim in flight ends first), let the tasks running here end within
        ``DRAIN_SECONDS``, then stop the rest and put them back for any replica."""
        self._stopping = True
        self._wake.set()
        if self._loop is not None:
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None
        running = list(self._running)
        if not running:
            return
        _, unfinished = await asyncio.wait(running, timeout=DRAIN_SECONDS)
        if not unfinished:
            return
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        try:
            async with asyncio.timeout(RELEASE_SECONDS):
                await self.tasks.release()
        except Exception:
            log.warning("could not put back the running background tasks", exc_info=True)

    async def _claim_forever(self) -> None:
        while not self._stopping:
            claimed = None
            if len(self._running) < self.pacing.concurrency:
                try:
                    claimed = await self.tasks.claim()
                except Exception:
                    log.warning("could not claim a background task", exc_info=True)
            if claimed is not None:
                runner = asyncio.create_task(self.run(claimed))
                self._running.add(runner)
                runner.add_done_callback(self._ended)
                continue  # there may be more due
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.pacing.poll_seconds)

    def _ended(self, runner: asyncio.Task[None]) -> None:
        self._running.discard(runner)
        self._wake.set()  # a slot is free

    async def run(self, task: Task) -> None:
        """Run one claimed task to its end: done, put back for another try, or failed."""
        handler = self.handlers.get(task.kind)
        if handler is None or task.attempts > self.pacing.max_attempts:
            reason = "no handler" if handler is None else "its tries ran out"
            try:
                await self.tasks.fail(task.id, reason)
            except Exception:
                log.warning("could not record a failed background task", exc_info=True)
            BACKGROUND_TASKS.labels(task.kind.value, "failed").inc()
            return
        keeper = asyncio.create_task(self._keep_leased(task))
        try:
            await self._settle(task, handler)
        except asyncio.CancelledError:
            raise  # stopping: the task is put back (``stop``)
        except Exception:
            # Its row stays running: another try comes once its lease runs out.
            log.warning("could not record how a background task ended", exc_info=True)
        finally:
            keeper.cancel()

    async def _settle(self, task: Task, handler: Handler) -> None:
        try:
            await handler(task)
        except asyncio.CancelledError:
            raise
        except NotFound:
            await whole(self.tasks.finish(task.id))  # its conversation or message is gone
            BACKGROUND_TASKS.labels(task.kind.value, "dropped").inc()
        except Exception as error:
            detail = f"{type(error).__name__}: {error}"
            if task.attempts >= self.pacing.max_attempts:
                log.warning(
                    "a background task failed for good",
                    extra={"kind": task.kind.value, "conversation_id": task.conversation_id},
                    exc_info=True,
                )
                await whole(self.tasks.fail(task.id, detail))
                BACKGROUND_TASKS.labels(task.kind.value, "failed").inc()
            else:
                log.info(
                    "a background task failed; trying again",
                    extra={"kind": task.kind.value, "attempts": task.attempts},
                )
                pause = pause_after(task.attempts, self.pacing.retry_seconds)
                await whole(self.tasks.retry(task.id, detail, pause))
                BACKGROUND_TASKS.labels(task.kind.value, "retried").inc()
        else:
            await whole(self.tasks.finish(task.id))
            BACKGROUND_TASKS.labels(task.kind.value, "done").inc()

    async def _keep_leased(self, task: Task) -> None:
        """Renew the task's lease while its handler runs."""
        while True:
            await asyncio.sleep(self.pacing.lease_seconds / 3)
            try:
                if not await self.tasks.renew(task.id):
                    return  # taken over: this run's result is no longer the task's
            except Exception:
                log.warning("could not renew a background task's lease", exc_info=True)


async def whole(write: Awaitable[T]) -> T:
    """Run a write to its end even when the caller is cancelled meanwhile (then re-raise):
    a statement cut in the middle can leave SQLite's write lock held, and a turn's last write
    must survive its caller going away."""
    done = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        await done
        raise

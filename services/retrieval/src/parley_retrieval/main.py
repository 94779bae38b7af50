"""retrieval's entry point: the embedder, the vector stores (knowledge bases' chunks, users'
memories), then gRPC."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from parley.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from parley_embeddings import Embedder, LocalEmbedder, OpenAICompatibleEmbedder
from parley_retrieval.adapters.edge import EdgeChunks
from parley_retrieval.adapters.edge_protocol import ShardSettings
from parley_retrieval.adapters.points import collection_name
from parley_retrieval.api import RetrievalServicer
from parley_retrieval.chunks import ChunkStore, SearchMode
from parley_retrieval.memories import MemoryIndex
from parley_retrieval.search import Retrieval, SearchDefaults
from parley_retrieval.settings import Settings
from parley_runtime.cli import service_main
from parley_runtime.grpc_server import Registration, Wiring

if TYPE_CHECKING:
    from parley_retrieval.adapters.qdrant import QdrantChunks

SERVICE = "parley.retrieval.v1.Retrieval"
T = TypeVar("T")
log = logging.getLogger("parley.retrieval")


def embedder(settings: Settings) -> Embedder:
    if settings.embeddings_provider == "openai":
        return OpenAICompatibleEmbedder(
            settings.embeddings_base_url or "",
            settings.embeddings_model,
            settings.embeddings_dimensions,
            api_key=settings.embeddings_api_key,
        )
    return LocalEmbedder(threads=settings.embeddings_threads)


def _model_and_dimensions(settings: Settings) -> tuple[str, int]:
    """The embedding model's name and size, known before the model loads."""
    if settings.embeddings_provider == "openai":
        return settings.embeddings_model, settings.embeddings_dimensions
    return LocalEmbedder.model, LocalEmbedder.dimensions


async def store(settings: Settings, prefix: str | None = None) -> EdgeChunks | QdrantChunks:
    """The Qdrant server's collection for the model, or the embedded engine's; ``prefix``
    names it (the knowledge bases' collection when None)."""
    model, dimensions = _model_and_dimensions(settings)
    collection = collection_name(prefix or settings.qdrant_collection, model, dimensions)
    if settings.qdrant_url:
        # Imported only for a server: qdrant-client's import is a second of the start.
        from qdrant_client import AsyncQdrantClient

        from parley_retrieval.adapters.qdrant import QdrantChunks

        client = AsyncQdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
        server = QdrantChunks(
            client,
            collection,
            dimensions,
            hnsw=(settings.hnsw_m, settings.hnsw_ef_construct),
            hnsw_ef=settings.hnsw_ef,
        )
        await server.ensure_collection()
        return server
    if (Path(settings.qdrant_path) / "meta.json").exists():
        log.warning(
            "QDRANT_PATH holds an index of the previous embedded store, which this version does "
            "not read: re-index the documents (see services/retrieval/README.md, Migration)",
            extra={"path": settings.qdrant_path},
        )
    return await EdgeChunks.open(
        settings.qdrant_path,
        collection,
        ShardSettings(
            dimensions=dimensions,
            hnsw_m=settings.hnsw_m,
            hnsw_ef_construct=settings.hnsw_ef_construct,
            hnsw_ef=settings.hnsw_ef,
            index_after_points=settings.index_after_points,
        ),
    )


async def build(
    settings: Settings,
    shared_embedder: Embedder | None = None,
    chunks: ChunkStore | None = None,
    memories: ChunkStore | None = None,
) -> Wiring:
    """The embedder (or one given, for tests), the stores of chunks and of memories (or
    those given), and the servicer."""
    # Loading the model and opening the stores (worker processes loading their shards) are
    # slow and independent: they overlap.
    given = shared_embedder
    model_task = asyncio.to_thread(embedder, settings) if given is None else _given(given)
    store_task = store(settings) if chunks is None else _given(chunks)
    memory_task = (
        store(settings, settings.memory_collection) if memories is None else _given(memories)
    )
    model, opened, remembered = await asyncio.gather(model_task, store_task, memory_task)
    retrieval = Retrieval(
        model,
        opened,
        defaults=SearchDefaults(
            mode=SearchMode(settings.search_mode),
            dense_weight=settings.hybrid_dense_weight,
            fusion_k=settings.hybrid_rrf_k,
        ),
    )
    index = MemoryIndex(model, remembered, queries=retrieval.queries, sparse=retrieval.sparse)
    servicer = RetrievalServicer(retrieval, index)

    async def close() -> None:
        await asyncio.gather(opened.close(), remembered.close())

    engines = [s for s in (opened, remembered) if isinstance(s, EdgeChunks)]

    async def ready() -> bool:
        return all(await asyncio.gather(*(e.ready() for e in engines)))

    return Wiring(
        registrations=[
            Registration(SERVICE, lambda s: pb_grpc.add_RetrievalServicer_to_server(servicer, s))
        ],
        close=close,
        ready=ready if engines else None,
    )


async def _given(value: T) -> T:
    return value


def main() -> None:
    service_main("retrieval", Settings, build)


if __name__ == "__main__":
    main()

"""retrieval's entry point: the embedder, Qdrant, then gRPC."""

from __future__ import annotations

import asyncio
from pathlib import Path

from qdrant_client import AsyncQdrantClient

from parley.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from parley_embeddings import Embedder, LocalEmbedder, OpenAICompatibleEmbedder
from parley_retrieval.adapters.qdrant import QdrantChunks
from parley_retrieval.api import RetrievalServicer
from parley_retrieval.search import Retrieval
from parley_retrieval.settings import Settings
from parley_runtime.cli import service_main
from parley_runtime.grpc_server import Registration, Wiring

SERVICE = "parley.retrieval.v1.Retrieval"


def embedder(settings: Settings) -> Embedder:
    if settings.embeddings_provider == "openai":
        return OpenAICompatibleEmbedder(
            settings.embeddings_base_url or "",
            settings.embeddings_model,
            settings.embeddings_dimensions,
            api_key=settings.embeddings_api_key,
        )
    return LocalEmbedder(threads=settings.embeddings_threads)


def qdrant(settings: Settings) -> AsyncQdrantClient:
    if settings.qdrant_url:
        return AsyncQdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
    if settings.qdrant_path == ":memory:":
        return AsyncQdrantClient(location=":memory:")
    Path(settings.qdrant_path).mkdir(parents=True, exist_ok=True)
    return AsyncQdrantClient(path=settings.qdrant_path)


async def build(settings: Settings, shared_embedder: Embedder | None = None) -> Wiring:
    """The embedder (or one given, for tests), the collection, and the servicer."""
    # Loading the model and opening embedded Qdrant (which reads every stored point) are
    # both slow and independent: they overlap in worker threads.
    if shared_embedder is None:
        model, client = await asyncio.gather(
            asyncio.to_thread(embedder, settings), asyncio.to_thread(qdrant, settings)
        )
    else:
        model, client = shared_embedder, qdrant(settings)
    chunks = QdrantChunks(
        client,
        settings.qdrant_collection,
        model.dimensions,
        server=settings.qdrant_url is not None,
    )
    await chunks.ensure_collection()
    servicer = RetrievalServicer(Retrieval(model, chunks))
    return Wiring(
        registrations=[
            Registration(SERVICE, lambda s: pb_grpc.add_RetrievalServicer_to_server(servicer, s))
        ],
        close=chunks.close,
    )


def main() -> None:
    service_main("retrieval", Settings, build)


if __name__ == "__main__":
    main()

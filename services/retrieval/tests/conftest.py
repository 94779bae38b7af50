"""The retrieval service in-process over real gRPC, on each of its stores: the embedded
engine (a worker process, in a temporary folder) and Qdrant's API (qdrant-client's local mode
standing in for a server). Calls are made as acme's ann."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterator

import pytest
from qdrant_client import AsyncQdrantClient

from parley.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from parley_embeddings import Embedder
from parley_retrieval.adapters.qdrant import QdrantChunks
from parley_retrieval.main import build
from parley_retrieval.settings import Settings
from parley_runtime.grpc_client import channel
from parley_testkit import acting_as
from parley_testkit.grpc import grpc_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """qdrant-client's local mode searches exhaustively and says so whenever a search passes
    HNSW parameters, as every search of the Qdrant adapter does."""
    for item in items:
        item.add_marker(pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"))


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    with acting_as("acme", "ann"):
        yield


@pytest.fixture(params=["embedded", "qdrant-api"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def retrieval_address(local_embedder: Embedder, backend: str) -> AsyncIterator[str]:
    store = memories = None
    if backend == "qdrant-api":
        client = AsyncQdrantClient(location=":memory:")
        store = QdrantChunks(client, "test", 384)
        memories = QdrantChunks(client, "test-memories", 384)
        with warnings.catch_warnings():  # local mode says payload indexes do nothing there
            warnings.simplefilter("ignore", UserWarning)
            await store.ensure_collection()
            await memories.ensure_collection()
    settings = Settings(grpc_port=0, qdrant_path=":memory:")
    wiring = await build(settings, local_embedder, store, memories)
    try:
        async with grpc_server(wiring.registrations) as address:
            yield address
    finally:
        await wiring.close()


@pytest.fixture
async def retrieval(retrieval_address: str) -> AsyncIterator[pb_grpc.RetrievalStub]:
    async with channel(retrieval_address, "parley.retrieval.v1.Retrieval") as chan:
        yield pb_grpc.RetrievalStub(chan)

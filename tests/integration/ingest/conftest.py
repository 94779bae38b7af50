"""ingest's tests with the real retrieval service: calls made as acme's ann, and retrieval
in-process on embedded Qdrant (memory) with the local model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from parley_embeddings import LocalEmbedder
from parley_retrieval.main import build
from parley_retrieval.settings import Settings
from parley_testkit import acting_as, grpc_server


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    with acting_as("acme", "ann"):
        yield


@pytest.fixture
async def retrieval_address(local_embedder: LocalEmbedder) -> AsyncIterator[str]:
    """The retrieval service in-process (embedded Qdrant in memory, the local model)."""
    wiring = await build(Settings(grpc_port=0, qdrant_path=":memory:"), local_embedder)
    async with grpc_server(wiring.registrations) as address:
        yield address
    await wiring.close()

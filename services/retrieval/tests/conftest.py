"""Calls to the retrieval service (the root conftest's ``retrieval_address``) as acme's ann."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from parley.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from parley_runtime.grpc_client import channel
from parley_testkit import acting_as


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    with acting_as("acme", "ann"):
        yield


@pytest.fixture
async def retrieval(retrieval_address: str) -> AsyncIterator[pb_grpc.RetrievalStub]:
    async with channel(retrieval_address, "parley.retrieval.v1.Retrieval") as chan:
        yield pb_grpc.RetrievalStub(chan)

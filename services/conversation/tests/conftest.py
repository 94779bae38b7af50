"""Fixtures of conversation's tests: its peers as fakes (fakes.py), served on one socket, and
the caller every call acts for."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from parley.llm_router.v1 import llm_router_pb2_grpc as llm_grpc
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_runtime.grpc_server import Registration
from parley_testkit import acting_as, grpc_server

from .fakes import FakeRetrieval, FakeRouter, Peers


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    router, retrieval = FakeRouter(), FakeRetrieval()
    registrations = [
        Registration(
            "parley.llm_router.v1.LlmRouter",
            lambda s: llm_grpc.add_LlmRouterServicer_to_server(router, s),
        ),
        Registration(
            "parley.retrieval.v1.Retrieval",
            lambda s: ret_grpc.add_RetrievalServicer_to_server(retrieval, s),
        ),
    ]
    async with grpc_server(registrations) as address:
        yield Peers(address, router, retrieval)


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    """Calls carry this principal (a sync fixture: its context reaches the test)."""
    with acting_as("acme", "ann"):
        yield

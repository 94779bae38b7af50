"""ingest's tests with the real retrieval service (the root conftest's ``retrieval_address``):
calls made as acme's ann."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from parley_testkit import acting_as


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    with acting_as("acme", "ann"):
        yield

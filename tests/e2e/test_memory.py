"""Long-term user memory with the five services as real processes, in front of an
OpenAI-protocol fake provider: a fact a user states in one conversation reaches the model's
prompt in another (what the provider receives), for that user only, and is gone once
deleted, from the list and from every later prompt.

The fake answers extraction with words, not a JSON list: the facts are the user's explicit
statements, taken by rule (conversation's memory.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from parley_devstack import Platform
from parley_fakes import OpenAIFake

from .api import bearer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

FACT = "The user's favourite colour is teal."


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Platform, OpenAIFake]]:
    data = tmp_path_factory.mktemp("memory")
    with OpenAIFake(tokens=8, token_delay_ms=1) as fake:
        platform = Platform(
            data_dir=Path(data),
            env={"OPENAI_BASE_URL": f"{fake.base_url}/v1", "LOCAL_TOKEN_DELAY_MS": "0"},
            per_service_env={"gateway": {"LIMITS_DEFAULT_TIER": "unlimited"}},
        )
        await platform.start()
        try:
            yield platform, fake
        finally:
            codes = await platform.stop()
        assert all(code == 0 for code in codes.values()), codes


def _client(platform: Platform, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=platform.gateway_url,
        headers={"Authorization": f"Bearer {bearer(user=user)}"},
        timeout=30,
    )


async def _ask(client: httpx.AsyncClient, content: str) -> str:
    """Send ``content`` in a new conversation; its id."""
    cid = (await client.post("/v1/conversations", json={})).json()["id"]
    turn = await client.post(f"/v1/conversations/{cid}/messages", json={"content": content})
    assert turn.status_code == 200, turn.text
    return str(cid)


def _prompt(fake: OpenAIFake, question: str) -> str:
    """What the provider was sent for the answer to ``question``."""
    [request] = [
        r
        for r in fake.requests
        if r.body.get("stream") and r.body["messages"][-1]["content"] == question
    ]
    return "\n".join(str(m["content"]) for m in request.body["messages"])


async def _memories(client: httpx.AsyncClient, at_least: int) -> list[dict[str, Any]]:
    for _ in range(200):
        found: list[dict[str, Any]] = (await client.get("/v1/memories")).json()["memories"]
        if len(found) >= at_least:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no memory kept: {found}")


async def test_a_fact_told_once_is_used_elsewhere_and_gone_after_deletion(
    running: tuple[Platform, OpenAIFake],
) -> None:
    platform, fake = running
    async with _client(platform, "hana") as hana, _client(platform, "ivo") as ivo:
        first = await _ask(hana, "Please remember that my favourite colour is teal.")
        [memory] = await _memories(hana, 1)
        assert (memory["content"], memory["conversation_id"]) == (FACT, first)

        question = "Which colour should I paint my bike?"
        await _ask(hana, question)
        assert f"<memory>{FACT}</memory>" in _prompt(fake, question)

        # Another user asking the same gets no memory of hana's.
        await _ask(ivo, "Which colour should I paint my boat?")
        assert "<memories>" not in _prompt(fake, "Which colour should I paint my boat?")
        assert (await ivo.get("/v1/memories")).json()["memories"] == []

        deleted = await hana.delete(f"/v1/memories/{memory['id']}")
        assert deleted.status_code == 204
        assert (await hana.get("/v1/memories")).json()["memories"] == []
        question = "Which colour should I paint my fence?"
        await _ask(hana, question)
        assert "teal" not in _prompt(fake, question)

        # Told again, then erased with the rest of hana's data.
        await _ask(hana, "Remember that my favourite colour is teal.")
        await _memories(hana, 1)
        erased = await hana.delete("/v1/me/data")
        assert erased.status_code == 200, erased.text
        assert erased.json()["deleted"]["memories"] == 1
        question = "Which colour should I paint my door?"
        await _ask(hana, question)
        assert "teal" not in _prompt(fake, question)

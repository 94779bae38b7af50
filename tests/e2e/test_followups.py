"""A follow-up question retrieves what its conversation is about: the five services as
processes, a small knowledge base, and an OpenAI-compatible fake as the model, scripted to
rewrite the follow-up. "Who leads it?" searched as written finds the passage about team leads;
made standalone from the history ("Who leads Project Zephyr?") it finds the project's, which
the answer then cites. The query searched is stored with the answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from parley_devstack import Platform
from parley_fakes import Behaviour, OpenAIFake

from .api import public_api
from .sse import Event, events

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

KB = "handbook"
ZEPHYR = (
    "# Project Zephyr\n\nProject Zephyr is the new billing platform, live since March. "
    "Dana Ruiz leads Project Zephyr and signs off each of its releases."
)
TEAM_LEADS = (
    "# Team leads\n\nWho leads a team? Each team has a lead, chosen every spring. The lead "
    "runs the weekly meeting, approves holidays and leads the hiring of the team."
)
REWRITTEN = "Who leads Project Zephyr?"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[httpx.AsyncClient, OpenAIFake]]:
    data = tmp_path_factory.mktemp("followups")
    with OpenAIFake(tokens=6, token_delay_ms=1) as fake:
        platform = Platform(
            data_dir=Path(data),
            env={"OPENAI_BASE_URL": f"{fake.base_url}/v1", "LOCAL_TOKEN_DELAY_MS": "0"},
            per_service_env={
                "gateway": {"LIMITS_DEFAULT_TIER": "unlimited"},
                # Titles and memory would take the fake's scripted answers.
                "conversation": {"BACKGROUND_CONCURRENCY": "0"},
            },
        )
        async with public_api(platform) as client:
            for title, content in (("Project Zephyr", ZEPHYR), ("Team leads", TEAM_LEADS)):
                await _indexed(client, title, content)
            yield client, fake


async def _indexed(client: httpx.AsyncClient, title: str, content: str) -> None:
    created = await client.post(
        f"/v1/knowledge-bases/{KB}/documents", json={"title": title, "content": content}
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job"]["id"]
    until = time.monotonic() + 30
    while time.monotonic() < until:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] == "succeeded":
            return
        assert job["state"] in ("queued", "running"), job
        await asyncio.sleep(0.1)
    raise AssertionError(f"{title} was not indexed in time")


async def _turn(client: httpx.AsyncClient, conversation_id: str, content: str) -> list[Event]:
    async with client.stream(
        "POST",
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": content},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200, await response.aread()
        return [event async for event in events(response)]


async def _top_title(client: httpx.AsyncClient, query: str) -> str:
    found = await client.post(f"/v1/knowledge-bases/{KB}/search", json={"query": query})
    assert found.status_code == 200, found.text
    results: list[dict[str, Any]] = found.json()["results"]
    assert results, f"nothing found for {query!r}"
    title: str = results[0]["title"]
    return title


async def test_a_follow_up_finds_the_passage_its_conversation_is_about(
    running: tuple[httpx.AsyncClient, OpenAIFake],
) -> None:
    client, fake = running
    # As written, the follow-up is about team leads in general.
    assert await _top_title(client, "Who leads it?") == "Team leads"
    assert await _top_title(client, REWRITTEN) == "Project Zephyr"

    created = await client.post("/v1/conversations", json={"settings": {"knowledge_base_id": KB}})
    assert created.status_code == 201, created.text
    conversation_id = created.json()["id"]
    first = await _turn(client, conversation_id, "What is Project Zephyr?")
    assert first[-1].name == "done", first[-1].data

    fake.push(Behaviour(text=REWRITTEN))  # the rewrite, then the answer's default text
    asked_before = len(fake.requests)
    second = await _turn(client, conversation_id, "Who leads it?")
    assert second[-1].name == "done", second[-1].data

    rewrite, answer = fake.requests[asked_before:]
    # The rewrite saw the conversation so far, as data.
    rewrite_prompt = str(rewrite.body["messages"])
    assert "What is Project Zephyr?" in rewrite_prompt
    assert "Who leads it?" in rewrite_prompt
    # The answer's prompt holds the project's passage, and the answer cites it.
    assert "Dana Ruiz leads Project Zephyr" in str(answer.body["messages"])
    cited = next(e for e in second if e.name == "citations").data["citations"]
    assert cited[0]["title"] == "Project Zephyr"
    stored = second[-1].data["message"]
    assert stored["search_query"] == REWRITTEN

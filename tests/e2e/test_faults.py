"""Processes killed mid-answer (SIGKILL, no cleanup), through the public API: the client gets a
terminal event at once, the store keeps what was streamed and nothing stays in progress, and
the conversation goes on once the process is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from parley_devstack import Platform
from parley_fakes import OpenAIFake

from .api import public_api, stream_interrupted
from .sse import events

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class Running:
    platform: Platform
    client: httpx.AsyncClient
    fake: OpenAIFake


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    data = tmp_path_factory.mktemp("faults")
    # Long answers: 60 tokens 50 ms apart, 3 s each.
    with OpenAIFake(tokens=60, token_delay_ms=50) as fake:
        platform = Platform(
            data_dir=Path(data),
            env={"OPENAI_BASE_URL": f"{fake.base_url}/v1", "LOG_LEVEL": "WARNING"},
            per_service_env={"conversation": {"TURN_FLUSH_SECONDS": "0.2"}},
        )
        async with public_api(platform) as client:
            yield Running(platform, client, fake)


async def test_a_killed_conversation_process_loses_no_answer(running: Running) -> None:
    client, platform = running.client, running.platform
    conversation_id = (await client.post("/v1/conversations", json={})).json()["id"]
    path = f"/v1/conversations/{conversation_id}/messages"
    headers = {"Accept": "text/event-stream", "Idempotency-Key": "leave-1"}

    async def kill() -> None:
        await platform.kill("conversation")

    # About a second into the answer (15 of its 60 tokens), the process dies.
    received, ended_after = await stream_interrupted(
        client,
        path,
        {"content": "How many days of leave?"},
        15,
        kill,
        {"Idempotency-Key": "leave-1"},
    )

    # The client is told at once, with one terminal event.
    assert received[-1].name == "error"
    assert [e.name for e in received].count("error") == 1
    assert "done" not in [e.name for e in received]
    assert ended_after < 1.0
    streamed = "".join(e.data["text"] for e in received if e.name == "delta")

    await platform.restart("conversation")
    # The gateway uses the process again within a second of its being ready.
    back_at = time.monotonic()
    while (listed := await client.get(path)).status_code != 200:
        assert time.monotonic() - back_at < 1.0, listed.json()
        await asyncio.sleep(0.05)
    stored = listed.json()["messages"]
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "failed"),
    ]
    answer = stored[1]
    assert answer["error_code"] == "interrupted"
    # What was saved before the kill is kept: a prefix of what the client saw, at most a
    # flush window (0.2 s, about 4 tokens) behind it.
    assert answer["content"]
    assert streamed.startswith(answer["content"])
    assert len(streamed.split()) - len(answer["content"].split()) <= 8

    # The same key replays that outcome; a new message is answered in full.
    async with client.stream(
        "POST", path, json={"content": "How many days of leave?"}, headers=headers
    ) as response:
        replay = [event async for event in events(response)]
    assert [e.name for e in replay] == ["accepted", "error"]
    assert replay[-1].data["code"] == "interrupted"

    async with client.stream(
        "POST",
        path,
        json={"content": "And now?"},
        headers={"Accept": "text/event-stream", "Idempotency-Key": "leave-2"},
    ) as response:
        again = [event async for event in events(response)]
    assert again[-1].name == "done"
    assert again[-1].data["message"]["status"] == "complete"


async def test_a_killed_router_fails_the_answer_it_was_streaming_and_nothing_else(
    running: Running,
) -> None:
    client, platform = running.client, running.platform
    conversation_id = (await client.post("/v1/conversations", json={})).json()["id"]
    path = f"/v1/conversations/{conversation_id}/messages"

    async def kill() -> None:
        await platform.kill("llm-router")

    received, ended_after = await stream_interrupted(client, path, {"content": "Tell me."}, 3, kill)
    assert received[-1].name == "error"
    assert ended_after < 1.0
    streamed = "".join(e.data["text"] for e in received if e.name == "delta")

    # conversation outlived the router: it stored exactly what the client saw.
    answer = (await client.get(path)).json()["messages"][-1]
    assert (answer["status"], answer["content"]) == ("failed", streamed)

    await platform.restart("llm-router")
    back_at = time.monotonic()
    while True:
        async with client.stream(
            "POST", path, json={"content": "Again?"}, headers={"Accept": "text/event-stream"}
        ) as response:
            got = [event async for event in events(response)]
        if got[-1].name == "done":
            break
        assert time.monotonic() - back_at < 1.5, got[-1].data
        await asyncio.sleep(0.1)

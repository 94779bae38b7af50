"""Connections between the services age out every second while answers take three, with a
one-second shutdown drain: no stream is cut (ageing's grace is the longest stream, not the
drain), and what each client saw is what was stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from parley_devstack import Platform
from parley_fakes import OpenAIFake

from .api import public_api
from .sse import events

pytestmark = [pytest.mark.e2e]
STREAMS = 12


async def test_ageing_connections_never_cut_a_streamed_answer(tmp_path: Path) -> None:
    with OpenAIFake(tokens=30, token_delay_ms=100) as fake:  # 3 s answers
        platform = Platform(
            data_dir=tmp_path,
            env={
                "OPENAI_BASE_URL": f"{fake.base_url}/v1",
                "LOG_LEVEL": "WARNING",
                "GRPC_MAX_CONNECTION_AGE_SECONDS": "1",
                "SHUTDOWN_GRACE_SECONDS": "1",
            },
        )
        async with public_api(platform) as client:

            async def one(i: int) -> tuple[str, str, str]:
                await asyncio.sleep(i * 0.25)  # spread over several connection ages
                cid = (await client.post("/v1/conversations", json={})).json()["id"]
                async with client.stream(
                    "POST",
                    f"/v1/conversations/{cid}/messages",
                    json={"content": f"question {i}"},
                    headers={"Accept": "text/event-stream"},
                ) as response:
                    got = [event async for event in events(response)]
                streamed = "".join(e.data["text"] for e in got if e.name == "delta")
                stored = (await client.get(f"/v1/conversations/{cid}/messages")).json()
                answer = stored["messages"][-1]
                assert answer["content"] == streamed
                return got[-1].name, answer["status"], streamed

            outcomes = await asyncio.gather(*(one(i) for i in range(STREAMS)))
    assert [(end, status) for end, status, _ in outcomes] == [("done", "complete")] * STREAMS
    assert all(len(text.split()) == 30 for _, _, text in outcomes)

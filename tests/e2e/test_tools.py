"""The tool loop through the public API: a turn's tool calls and results stream as SSE events
and WebSocket frames and are stored with the answer; a conversation process killed (SIGKILL)
while a tool runs leaves the answer closed as interrupted, its tool activity kept."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from parley_devstack import Platform
from parley_fakes import Behaviour, OpenAIFake

from .api import bearer, public_api
from .sse import Event, events

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

# How long the slow page keeps a fetch waiting: long enough to kill the process meanwhile.
SLOW_PAGE_SECONDS = 8.0


class SlowSite(BaseHTTPRequestHandler):
    """A page on loopback that takes its time."""

    def do_GET(self) -> None:
        time.sleep(SLOW_PAGE_SECONDS)
        body = b"late"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def slow_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowSite)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@dataclass
class Running:
    platform: Platform
    client: httpx.AsyncClient
    fake: OpenAIFake
    site: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    tmp_path_factory: pytest.TempPathFactory, slow_site: str
) -> AsyncIterator[Running]:
    data = tmp_path_factory.mktemp("tools")
    with OpenAIFake(tokens=5) as fake:
        platform = Platform(
            data_dir=Path(data),
            env={"OPENAI_BASE_URL": f"{fake.base_url}/v1", "LOG_LEVEL": "WARNING"},
            per_service_env={
                "conversation": {
                    "TURN_FLUSH_SECONDS": "0.2",
                    # No background work (titles, memories): its model calls would take the
                    # answers scripted for the turns.
                    "BACKGROUND_CONCURRENCY": "0",
                    "TOOLS": "calculator,current_time,http_fetch",
                    "HTTP_FETCH_ALLOWED_HOSTS": slow_site,
                }
            },
        )
        async with public_api(platform) as client:
            yield Running(platform, client, fake, slow_site)


def turn_requests(fake: OpenAIFake, question: str) -> list[dict[str, Any]]:
    """The bodies of the model calls of the turn that asked ``question``."""
    return [
        r.body
        for r in fake.requests
        if r.body.get("tools") and any(m.get("content") == question for m in r.body["messages"])
    ]


async def test_tool_calls_and_results_stream_as_sse_events_and_are_stored(
    running: Running,
) -> None:
    client, fake = running.client, running.fake
    cid = (await client.post("/v1/conversations", json={})).json()["id"]
    fake.push(
        Behaviour(tool_name="calculator", tool_arguments={"expression": "25 * 0.8"}),
        Behaviour(
            tool_calls=[
                {"name": "calculator", "arguments": {"expr": "oops"}},
                {"name": "current_time", "arguments": {"timezone": "Europe/Paris"}},
            ]
        ),
        Behaviour(text="20 days, and it is a fine day in Paris."),
    )
    async with client.stream(
        "POST",
        f"/v1/conversations/{cid}/messages",
        json={"content": "What is 80% of 25 days?"},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        received = [event async for event in events(response)]

    names = [e.name for e in received]
    assert names[0] == "accepted"
    assert names[-2:] == ["usage", "done"]
    calls = [e.data for e in received if e.name == "tool_call"]
    results = [e.data for e in received if e.name == "tool_result"]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("calculator", {"expression": "25 * 0.8"}),
        ("calculator", {"expr": "oops"}),
        ("current_time", {"timezone": "Europe/Paris"}),
    ]
    # Each call's event comes before its result; the text comes after every step.
    for call in calls:
        position = next(
            i for i, e in enumerate(received) if e.data.get("call_id") == call["call_id"]
        )
        assert received[position].name == "tool_call"
    assert names.index("delta") > max(i for i, n in enumerate(names) if n == "tool_result")
    by_call = {r["call_id"]: r for r in results}
    first, wrong, clock = (by_call[c["call_id"]] for c in calls)
    assert first == {
        "call_id": calls[0]["call_id"],
        "name": "calculator",
        "result": "20.0",
        "is_error": False,
        "error_code": None,
    }
    assert (wrong["is_error"], wrong["error_code"]) == (True, "invalid_arguments")
    assert json.loads(clock["result"])["timezone"] == "Europe/Paris"

    done = received[-1].data["message"]
    assert done["status"] == "complete"
    assert done["content"] == "20 days, and it is a fine day in Paris."
    assert [(t["step"], t["name"], t["error_code"]) for t in done["tool_activity"]] == [
        (1, "calculator", None),
        (2, "calculator", "invalid_arguments"),
        (2, "current_time", None),
    ]
    stored = (await client.get(f"/v1/conversations/{cid}/messages")).json()["messages"]
    assert stored[-1]["tool_activity"] == done["tool_activity"]
    assert len(turn_requests(fake, "What is 80% of 25 days?")) == 3


async def test_tool_events_reach_a_websocket_as_frames(running: Running) -> None:
    cid = (await running.client.post("/v1/conversations", json={})).json()["id"]
    running.fake.push(
        Behaviour(tool_name="calculator", tool_arguments={"expression": "2 ** 10"}),
        Behaviour(text="1024."),
    )
    url = running.platform.gateway_url.replace("http://", "ws://") + "/v1/ws"
    protocols = ["parley.v1", f"bearer.{bearer()}"]
    async with connect(url, subprotocols=protocols) as socket:  # type: ignore[arg-type]
        await socket.send(json.dumps({"type": "send", "conversation_id": cid, "content": "2^10?"}))
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))
    kinds = [f["type"] for f in frames]
    assert kinds[:3] == ["accepted", "tool_call", "tool_result"]
    assert kinds[-1] == "done"
    assert frames[2]["result"] == "1024"
    assert frames[1]["call_id"] == frames[2]["call_id"]
    assert frames[-1]["message"]["tool_activity"][0]["result"] == "1024"


async def test_a_process_killed_during_a_tool_step_leaves_a_consistent_conversation(
    running: Running,
) -> None:
    client, platform = running.client, running.platform
    cid = (await client.post("/v1/conversations", json={})).json()["id"]
    path = f"/v1/conversations/{cid}/messages"
    running.fake.push(
        Behaviour(tool_name="http_fetch", tool_arguments={"url": f"http://{running.site}/slow"})
    )
    received: list[Event] = []
    async with client.stream(
        "POST",
        path,
        json={"content": "Fetch the slow page."},
        headers={"Accept": "text/event-stream"},
    ) as response:
        stream = events(response)
        async for event in stream:
            received.append(event)
            if event.name == "tool_call":
                break
        await asyncio.sleep(0.6)  # the step's activity is saved (TURN_FLUSH_SECONDS 0.2)
        await platform.kill("conversation")
        killed_at = time.monotonic()
        async for event in stream:
            received.append(event)
    # The client is told at once, with one terminal event.
    assert [e.name for e in received][-1] == "error"
    assert time.monotonic() - killed_at < 2.0

    await platform.restart("conversation")
    back_at = time.monotonic()
    while (listed := await client.get(path)).status_code != 200:
        assert time.monotonic() - back_at < 5.0, listed.json()
        await asyncio.sleep(0.05)
    stored = listed.json()["messages"]
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "failed"),
    ]
    answer = stored[1]
    assert answer["error_code"] == "interrupted"
    # The call that was running is kept, without a result.
    assert [(t["name"], t["result"], t["step"]) for t in answer["tool_activity"]] == [
        ("http_fetch", "", 1)
    ]
    asked = next(e for e in received if e.name == "tool_call")
    assert answer["tool_activity"][0]["call_id"] == asked.data["call_id"]

    # The conversation goes on.
    async with client.stream(
        "POST", path, json={"content": "And now?"}, headers={"Accept": "text/event-stream"}
    ) as response:
        again = [event async for event in events(response)]
    assert again[-1].name == "done"
    assert again[-1].data["message"]["status"] == "complete"

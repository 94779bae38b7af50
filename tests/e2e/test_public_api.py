"""The rest of the public API with the five services as real processes: a file uploaded as
multipart grounds an answer that is rated, regenerated, exported and deleted with the user's
data; an answer is stopped over a WebSocket (the provider's stream with it) and read back
after, and stopped over HTTP from a second connection.

One platform for the module, in front of an OpenAI-protocol fake provider.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from parley_devstack import Platform
from parley_fakes import Behaviour, OpenAIFake

from .api import bearer
from .sse import Event, events

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

LEAVE = (
    b"# Leave\n\nEmployees have 25 days of paid leave a year. Unused days expire in March.\n\n"
    b"# Travel\n\nBook trains for trips under 500 km.\n"
)
SLOW = Behaviour(tokens=400, token_delay_ms=10)


@dataclass
class Running:
    platform: Platform
    fake: OpenAIFake
    clients: list[httpx.AsyncClient]

    def client(self, user: str) -> httpx.AsyncClient:
        """A client of the API acting as ``user`` of acme (development scopes)."""
        client = httpx.AsyncClient(
            base_url=self.platform.gateway_url,
            headers={"Authorization": f"Bearer {bearer(user=user)}"},
            timeout=30,
        )
        self.clients.append(client)
        return client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    data = tmp_path_factory.mktemp("public-api")
    with OpenAIFake(tokens=12, token_delay_ms=2) as fake:
        platform = Platform(
            data_dir=Path(data),
            env={"OPENAI_BASE_URL": f"{fake.base_url}/v1", "LOCAL_TOKEN_DELAY_MS": "0"},
            # This module's requests are not what is tested for limits; nor is the work
            # after a turn (titles, memory: tests/e2e/test_memory.py), whose model calls would
            # count in the usage asserted here.
            per_service_env={
                "gateway": {"LIMITS_DEFAULT_TIER": "unlimited"},
                "conversation": {"BACKGROUND_CONCURRENCY": "0"},
            },
        )
        await platform.start()
        found = Running(platform, fake, [])
        try:
            yield found
        finally:
            for client in found.clients:
                await client.aclose()
            codes = await platform.stop()
        assert all(code == 0 for code in codes.values()), codes


async def _job_done(client: httpx.AsyncClient, job_id: str) -> None:
    for _ in range(300):
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.05)
    assert job["state"] == "succeeded", job


async def _streamed(client: httpx.AsyncClient, path: str, **body: str) -> list[Event]:
    async with client.stream(
        "POST", path, json=body, headers={"Accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200, await response.aread()
        return [event async for event in events(response)]


async def test_a_users_data_from_upload_to_erasure(running: Running) -> None:
    client = running.client("erin")
    uploaded = await client.post(
        "/v1/knowledge-bases/erin-handbook/documents/upload",
        data={"title": "Leave policy"},
        files={"file": ("leave.md", LEAVE, "application/octet-stream")},
    )
    assert uploaded.status_code == 201, uploaded.text
    document = uploaded.json()["document"]
    assert document["content_type"] == "text/markdown"
    await _job_done(client, uploaded.json()["job"]["id"])
    found = await client.post(
        "/v1/knowledge-bases/erin-handbook/search", json={"query": "paid leave", "top_k": 1}
    )
    assert found.json()["results"][0]["document_id"] == document["id"]

    cid = (
        await client.post(
            "/v1/conversations",
            json={"settings": {"knowledge_base_id": "erin-handbook", "model": "local"}},
        )
    ).json()["id"]
    turn = await _streamed(
        client, f"/v1/conversations/{cid}/messages", content="How many days of paid leave?"
    )
    assert "25 days of paid leave" in turn[-1].data["message"]["content"]
    answer_id = turn[0].data["assistant_message_id"]
    rated = await client.put(
        f"/v1/conversations/{cid}/messages/{answer_id}/feedback", json={"rating": "up"}
    )
    assert rated.status_code == 200, rated.text
    again = await _streamed(client, f"/v1/conversations/{cid}/regenerate")
    assert again[-1].name == "done"
    assert again[-1].data["message"]["id"] != answer_id

    exported = await client.get("/v1/me/export")
    assert exported.status_code == 200, exported.text
    with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        conversations = json.loads(archive.read("conversations.json"))
    # The superseded answer is in the export, not in the conversation.
    assert manifest["counts"] == {
        "conversations": 1,
        "messages": 3,
        "feedback": 1,
        "documents": 1,
        "memories": 0,
        "usage_rows": 1,
    }
    assert [m["role"] for m in conversations[0]["messages"]] == ["user", "assistant", "assistant"]

    deleted = await client.delete("/v1/me/data")
    assert deleted.status_code == 200, deleted.text
    counts = deleted.json()["deleted"]
    assert (counts["conversations"], counts["messages"], counts["documents"]) == (1, 3, 1)
    assert counts["chunks"] >= 2
    assert counts["usage_records"] >= 1
    assert (await client.get("/v1/conversations")).json()["conversations"] == []
    after = await client.post(
        "/v1/knowledge-bases/erin-handbook/search", json={"query": "paid leave"}
    )
    assert after.json()["results"] == []
    assert (await client.get(f"/v1/documents/{document['id']}")).status_code == 404


async def test_a_websocket_cancel_stops_the_provider_and_the_answer_reads_back(
    running: Running,
) -> None:
    client = running.client("finn")
    cid = (await client.post("/v1/conversations", json={})).json()["id"]
    running.fake.push(SLOW)
    url = running.platform.gateway_url.replace("http://", "ws://") + "/v1/ws"
    protocols = ["parley.v1", f"bearer.{bearer(user='finn')}"]
    async with connect(url, subprotocols=protocols) as socket:  # type: ignore[arg-type]
        assert socket.subprotocol == "parley.v1"
        await socket.send(json.dumps({"type": "send", "conversation_id": cid, "content": "Go."}))
        frames: list[dict[str, Any]] = []
        while sum(f["type"] == "delta" for f in frames) < 3:
            frames.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))
        await socket.send(json.dumps({"type": "cancel"}))
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))
    assert (frames[-1]["type"], frames[-1]["code"]) == ("error", "cancelled")
    answer_id = frames[0]["assistant_message_id"]
    text = "".join(f["text"] for f in frames if f["type"] == "delta")
    stopped = next(r for r in running.fake.requests if r.body["messages"][-1]["content"] == "Go.")
    for _ in range(100):
        if stopped.outcome:
            break
        await asyncio.sleep(0.02)
    assert stopped.outcome == "disconnected"
    assert stopped.tokens_sent < 400

    async with client.stream(
        "GET", f"/v1/conversations/{cid}/messages/{answer_id}/events"
    ) as response:
        read_back = [event async for event in events(response)]
    assert [e.name for e in read_back] == ["snapshot", "error"]
    assert read_back[0].data["text"] == text
    assert read_back[1].data["code"] == "cancelled"


async def test_an_answer_is_stopped_over_http_from_another_connection(running: Running) -> None:
    client, other = running.client("gus"), running.client("gus")
    cid = (await client.post("/v1/conversations", json={})).json()["id"]
    running.fake.push(SLOW)
    async with client.stream(
        "POST",
        f"/v1/conversations/{cid}/messages",
        json={"content": "Keep going."},
        headers={"Accept": "text/event-stream"},
    ) as response:
        stream = events(response)
        first = await anext(stream)
        answer_id = first.data["assistant_message_id"]
        await anext(stream)
        stopped = await other.post(f"/v1/conversations/{cid}/messages/{answer_id}/cancel")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"] == "cancelled"
        rest = [event async for event in stream]
    assert rest[-1].name == "error"
    assert rest[-1].data["code"] == "cancelled"

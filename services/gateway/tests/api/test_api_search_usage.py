"""Search over a knowledge base and the usage report, through the public API in front of the
real retrieval and llm-router: each tenant finds only its own passages, each user reads only
their own usage unless an admin."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]
SEARCH = "/v1/knowledge-bases/handbook/search"


async def _indexed(client: httpx.AsyncClient, content: str, **fields: Any) -> str:
    created = await client.post(
        "/v1/knowledge-bases/handbook/documents", json={"content": content, **fields}
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job"]["id"]
    for _ in range(200):
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.05)
    assert job["state"] == "succeeded", job
    return str(created.json()["document"]["id"])


async def test_a_search_finds_the_tenants_passages_best_first(
    stack: Any, error_of: ErrorOf
) -> None:
    acme = stack.client
    leave = await _indexed(
        acme, "Employees have 25 days of paid leave a year.", metadata={"team": "hr"}
    )
    trains = await _indexed(acme, "Book trains for any trip under 600 km.", title="Travel")
    globex = stack.as_user(tenant="globex")
    theirs = await _indexed(globex, "Globex staff have 30 days of paid leave a year.")

    found = await acme.post(SEARCH, json={"query": "How many days of leave?", "top_k": 2})
    assert found.status_code == 200, found.text
    results = found.json()["results"]
    assert [r["document_id"] for r in results] == [leave, trains]
    assert results[0]["score"] > results[1]["score"]
    assert results[0]["text"] == "Employees have 25 days of paid leave a year."
    assert results[1]["title"] == "Travel"
    assert results[0]["metadata"] == {"team": "hr"}

    filtered = await acme.post(SEARCH, json={"query": "leave", "filters": {"document_id": trains}})
    assert [r["document_id"] for r in filtered.json()["results"]] == [trains]
    dense = await acme.post(SEARCH, json={"query": "How many days of leave?", "mode": "dense"})
    assert dense.json()["results"][0]["document_id"] == leave
    strict = await acme.post(SEARCH, json={"query": "leave", "score_threshold": 0.99})
    assert strict.json()["results"] == []
    # Another tenant's passages never show, the same knowledge base name notwithstanding.
    mine = await globex.post(SEARCH, json={"query": "How many days of leave?", "top_k": 10})
    assert [r["document_id"] for r in mine.json()["results"]] == [theirs]
    elsewhere = await acme.post("/v1/knowledge-bases/nothing-here/search", json={"query": "leave"})
    assert elsewhere.json()["results"] == []

    for body in (
        {"query": ""},
        {"query": "   "},
        {"query": "leave", "top_k": 0},
        {"query": "leave", "top_k": 51},
        {"query": "leave", "top_k": "3"},
        {"query": "leave", "filters": {"bad key": "x"}},
        {"query": "leave", "filters": {"team": []}},
        {"query": "leave", "mode": "fuzzy"},
        {"query": "leave", "knowledge_base_id": "other"},
        {"query": "x" * 4001},
    ):
        response = await acme.post(SEARCH, json=body)
        assert response.status_code == 422, (body, response.text)
    usage_only = stack.as_user(scopes=("usage",))
    error_of(await usage_only.post(SEARCH, json={"query": "leave"}), 403, "missing_scope")


async def test_usage_and_cost_by_user_and_model(stack: Any, error_of: ErrorOf) -> None:
    ann, bob = stack.client, stack.as_user(user="bob")
    for client, turns in ((ann, 2), (bob, 1)):
        cid = (await client.post("/v1/conversations", json={})).json()["id"]
        for _ in range(turns):
            sent = await client.post(f"/v1/conversations/{cid}/messages", json={"content": "Hi"})
            assert sent.status_code == 200, sent.text

    mine = await ann.get("/v1/usage")
    assert mine.status_code == 200, mine.text
    report = mine.json()
    [row] = report["rows"]
    assert (row["user_id"], row["requests"]) == ("ann", 2)
    assert row["model"].startswith("openai/")
    assert row["input_tokens"] > 0
    assert row["output_tokens"] > 0
    assert report["total"]["requests"] == 2
    assert report["start"].endswith("-01T00:00:00Z")  # the start of this month

    now = datetime.now(UTC)
    later = await ann.get(
        "/v1/usage",
        params={
            "start": (now + timedelta(hours=1)).isoformat(),
            "end": (now + timedelta(hours=2)).isoformat(),
        },
    )
    assert later.json()["rows"] == []
    error_of(
        await ann.get("/v1/usage", params={"start": now.isoformat(), "end": now.isoformat()}),
        422,
        "invalid_window",
    )
    error_of(await ann.get("/v1/usage", params={"start": "yesterday"}), 422, "invalid_request")
    # Anyone else's usage is an admin's to read.
    error_of(await ann.get("/v1/usage", params={"user_id": "bob"}), 403, "missing_scope")
    error_of(await ann.get("/v1/usage", params={"user_id": "*"}), 403, "missing_scope")
    error_of(await stack.as_user(scopes=("read",)).get("/v1/usage"), 403, "missing_scope")
    admin = stack.as_user(user="root", scopes=("usage", "admin"))
    everyone = (await admin.get("/v1/usage", params={"user_id": "*"})).json()
    assert {(r["user_id"], r["requests"]) for r in everyone["rows"]} == {("ann", 2), ("bob", 1)}
    assert everyone["total"]["requests"] == 3
    one = (await admin.get("/v1/usage", params={"user_id": "bob"})).json()
    assert [r["user_id"] for r in one["rows"]] == ["bob"]
    foreign = stack.as_user(tenant="globex", user="root", scopes=("usage", "admin"))
    assert (await foreign.get("/v1/usage", params={"user_id": "*"})).json()["rows"] == []

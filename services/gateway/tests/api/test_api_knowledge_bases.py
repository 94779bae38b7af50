"""Knowledge bases through the public API, in front of the real ingest and retrieval: a tenant
lists its own, with their documents counted by status, a page at a time; an admin indexes a
knowledge base (or one of its documents) again, each document under a new version that search
finds once indexed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from parley_gateway.auth import DEFAULT_SCOPES

ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]
ADMIN = (*DEFAULT_SCOPES, "admin")


async def _ended(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    for _ in range(200):
        job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


async def _indexed(client: httpx.AsyncClient, kb: str, content: str) -> str:
    created = await client.post(f"/v1/knowledge-bases/{kb}/documents", json={"content": content})
    assert created.status_code == 201, created.text
    assert (await _ended(client, created.json()["job"]["id"]))["state"] == "succeeded"
    return str(created.json()["document"]["id"])


async def test_a_tenant_lists_its_knowledge_bases_with_their_documents(
    stack: Any, error_of: ErrorOf
) -> None:
    acme = stack.client
    await _indexed(acme, "handbook", "Employees have 25 days of paid leave a year.")
    await _indexed(acme, "handbook", "Book trains for any trip under 600 km.")
    await _indexed(acme, "benefits", "The gym is free for staff.")
    globex = stack.as_user(tenant="globex")
    await _indexed(globex, "secrets", "Globex's own plans.")

    listed = await acme.get("/v1/knowledge-bases")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["next_page_token"] is None
    assert [(k["id"], k["document_count"]) for k in body["knowledge_bases"]] == [
        ("benefits", 1),
        ("handbook", 2),
    ]
    handbook = body["knowledge_bases"][1]
    assert handbook["documents_by_status"] == {
        "pending": 0,
        "processing": 0,
        "ready": 2,
        "failed": 0,
    }
    assert handbook["updated_at"].endswith("Z")

    first = (await acme.get("/v1/knowledge-bases", params={"page_size": 1})).json()
    assert [k["id"] for k in first["knowledge_bases"]] == ["benefits"]
    second = await acme.get(
        "/v1/knowledge-bases", params={"page_size": 1, "page_token": first["next_page_token"]}
    )
    assert [k["id"] for k in second.json()["knowledge_bases"]] == ["handbook"]
    assert second.json()["next_page_token"] is None

    theirs = (await globex.get("/v1/knowledge-bases")).json()
    assert [k["id"] for k in theirs["knowledge_bases"]] == ["secrets"]
    for params in ({"page_size": 0}, {"page_size": 201}, {"page_token": "not a token"}):
        assert (await acme.get("/v1/knowledge-bases", params=params)).status_code == 422
    usage_only = stack.as_user(scopes=("usage",))
    error_of(await usage_only.get("/v1/knowledge-bases"), 403, "missing_scope")


async def test_an_admin_indexes_a_knowledge_base_again(stack: Any, error_of: ErrorOf) -> None:
    acme = stack.client
    leave = await _indexed(acme, "handbook", "Employees have 25 days of paid leave a year.")
    trains = await _indexed(acme, "handbook", "Book trains for any trip under 600 km.")
    admin = stack.as_user(scopes=ADMIN)

    # Without the admin scope, nothing is queued.
    error_of(await acme.post("/v1/knowledge-bases/handbook/reindex"), 403, "missing_scope")

    everything = await admin.post("/v1/knowledge-bases/handbook/reindex")
    assert everything.status_code == 202, everything.text
    body = everything.json()
    assert body["queued"] == 2
    assert [(d["document_id"], d["version"]) for d in body["documents"]] == [
        (leave, 2),
        (trains, 2),
    ]
    for queued in body["documents"]:
        assert (await _ended(acme, queued["job_id"]))["state"] == "succeeded"
    document = (await acme.get(f"/v1/documents/{leave}")).json()
    assert (document["version"], document["status"]) == (2, "ready")
    found = await acme.post(
        "/v1/knowledge-bases/handbook/search", json={"query": "paid leave", "top_k": 10}
    )
    assert [r["document_id"] for r in found.json()["results"]].count(leave) == 1

    one = await admin.post("/v1/knowledge-bases/handbook/reindex", json={"document_id": trains})
    assert one.status_code == 202, one.text
    assert [(d["document_id"], d["version"]) for d in one.json()["documents"]] == [(trains, 3)]
    await _ended(acme, one.json()["documents"][0]["job_id"])

    empty = await admin.post("/v1/knowledge-bases/nothing-here/reindex")
    assert empty.json() == {"queued": 0, "documents": []}
    error_of(
        await admin.post("/v1/knowledge-bases/handbook/reindex", json={"document_id": "doc_nope"}),
        404,
        "document_not_found",
    )
    refused: list[dict[str, Any]] = [{"document_id": "not an id"}, {"documents": []}]
    for wrong in refused:
        response = await admin.post("/v1/knowledge-bases/handbook/reindex", json=wrong)
        assert response.status_code == 422, response.text

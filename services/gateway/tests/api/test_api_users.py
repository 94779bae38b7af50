"""A user's data as a whole through the public API, in front of the real services: the export
archive holds what each service keeps of the user, the deletion removes it from every store
and says what went, and neither reaches another user or tenant."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import Callable
from typing import Any

import httpx

ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]
LEAVE = "# Leave\n\nEmployees have 25 days of paid leave a year.\n\n# Travel\n\nBook trains."


async def _turn(client: httpx.AsyncClient, content: str) -> dict[str, Any]:
    cid = (await client.post("/v1/conversations", json={"title": content})).json()["id"]
    turn = await client.post(f"/v1/conversations/{cid}/messages", json={"content": content})
    assert turn.status_code == 200, turn.text
    return {"conversation_id": cid, **turn.json()}


async def _document(client: httpx.AsyncClient, content: str, title: str) -> dict[str, Any]:
    created = await client.post(
        "/v1/knowledge-bases/handbook/documents", json={"content": content, "title": title}
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job"]["id"]
    for _ in range(200):
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.05)
    assert job["state"] == "succeeded", job
    document: dict[str, Any] = created.json()["document"]
    return document


async def _found(client: httpx.AsyncClient, query: str) -> set[str]:
    found = await client.post("/v1/knowledge-bases/handbook/search", json={"query": query})
    assert found.status_code == 200, found.text
    return {hit["document_id"] for hit in found.json()["results"]}


def _archive(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith('attachment; filename="parley-')
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == [
            "conversations.json",
            "documents.json",
            "manifest.json",
            "memories.json",
            "usage.json",
        ]
        return {name: json.loads(archive.read(name)) for name in archive.namelist()}


async def test_a_user_exports_then_deletes_everything_parley_keeps_of_them(
    stack: Any, error_of: ErrorOf
) -> None:
    ann = stack.client
    bob = stack.as_user(user="bob")
    other_ann = stack.as_user(tenant="globex")
    mine = await _turn(ann, "What is the leave policy?")
    rated = await ann.put(
        f"/v1/conversations/{mine['conversation_id']}/messages/"
        f"{mine['assistant_message_id']}/feedback",
        json={"rating": "up", "comment": "Clear."},
    )
    assert rated.status_code == 200
    leave = await _document(ann, LEAVE, "Leave policy")
    bobs_turn = await _turn(bob, "Hello from bob")
    bobs_doc = await _document(bob, "# Bob\n\nBob's notes about trains and leave.", "Bob")
    theirs = await _document(other_ann, LEAVE, "Globex leave")

    exported = _archive(await ann.get("/v1/me/export"))
    manifest = exported["manifest.json"]
    assert manifest["format"] == "parley-export/1"
    assert (manifest["tenant_id"], manifest["user_id"]) == ("acme", "ann")
    assert manifest["counts"] == {
        "conversations": 1,
        "messages": 2,
        "feedback": 1,
        "documents": 1,
        "memories": 0,
        "usage_rows": 1,
    }
    [conversation] = exported["conversations.json"]
    assert conversation["conversation"]["id"] == mine["conversation_id"]
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"]
    assert conversation["messages"][1]["content"] == mine["message"]["content"]
    assert conversation["feedback"][0]["comment"] == "Clear."
    assert [d["id"] for d in exported["documents.json"]] == [leave["id"]]
    [row] = exported["usage.json"]["rows"]
    assert (row["user_id"], row["requests"]) == ("ann", 1)
    assert row["model"].startswith("openai/")
    assert exported["usage.json"]["total"]["output_tokens"] == row["output_tokens"] > 0

    assert leave["id"] in await _found(ann, "days of paid leave")
    # Deleting needs both scopes a user's data was written with.
    chat_only = stack.as_user(scopes=("read", "chat"))
    error_of(await chat_only.delete("/v1/me/data"), 403, "missing_scope")

    deleted = await ann.delete("/v1/me/data")
    assert deleted.status_code == 200, deleted.text
    counts = deleted.json()["deleted"]
    assert deleted.json()["user_id"] == "ann"
    assert {k: v for k, v in counts.items() if k != "chunks"} == {
        "conversations": 1,
        "messages": 2,
        "feedback": 1,
        "memories": 0,
        "documents": 1,
        "ingest_jobs": 1,
        "usage_records": 1,
        "api_keys_revoked": 0,
    }
    assert counts["chunks"] >= 2  # the two sections of the leave policy

    # Gone from every store: conversation's rows, ingest's document, retrieval's chunks,
    # llm-router's ledger.
    assert (await ann.get("/v1/conversations")).json()["conversations"] == []
    error_of(await ann.get(f"/v1/documents/{leave['id']}"), 404, "document_not_found")
    assert leave["id"] not in await _found(ann, "days of paid leave")
    assert (await ann.get("/v1/usage")).json()["rows"] == []
    again = _archive(await ann.get("/v1/me/export"))
    assert set(again["manifest.json"]["counts"].values()) == {0}
    second = await ann.delete("/v1/me/data")
    assert set(second.json()["deleted"].values()) == {0}

    # Nobody else lost anything.
    assert len((await bob.get("/v1/conversations")).json()["conversations"]) == 1
    assert bobs_doc["id"] in await _found(bob, "Bob's notes")
    listed = await bob.get(f"/v1/conversations/{bobs_turn['conversation_id']}/messages")
    assert len(listed.json()["messages"]) == 2
    assert theirs["id"] in await _found(other_ann, "days of paid leave")


async def test_an_admin_exports_and_deletes_a_user_of_their_tenant_only(
    stack: Any, error_of: ErrorOf
) -> None:
    bob = stack.as_user(user="bob")
    await _turn(bob, "Hello from bob")
    admin = stack.as_user(user="root", scopes=("admin", "read"))
    made = await admin.post(
        "/v1/admin/api-keys", json={"name": "bob's sync", "scopes": ["read"], "user_id": "bob"}
    )
    assert made.status_code == 201, made.text
    bobs_key = {"Authorization": f"Bearer {made.json()['key']}"}
    assert (await stack.client.get("/v1/conversations", headers=bobs_key)).status_code == 200
    exported = _archive(await admin.get("/v1/admin/users/bob/export"))
    assert exported["manifest.json"]["user_id"] == "bob"
    assert exported["manifest.json"]["counts"]["conversations"] == 1
    # A user of another tenant is out of reach: the admin's tenant is the one searched.
    foreign = stack.as_user(tenant="globex", user="root", scopes=("admin",))
    empty = _archive(await foreign.get("/v1/admin/users/bob/export"))
    assert empty["manifest.json"]["counts"]["conversations"] == 0
    gone = await foreign.delete("/v1/admin/users/bob/data")
    assert gone.json()["deleted"]["conversations"] == 0

    deleted = await admin.delete("/v1/admin/users/bob/data")
    assert deleted.status_code == 200, deleted.text
    assert (deleted.json()["user_id"], deleted.json()["deleted"]["conversations"]) == ("bob", 1)
    assert deleted.json()["deleted"]["api_keys_revoked"] == 1
    assert (await bob.get("/v1/conversations")).json()["conversations"] == []
    # The keys that acted as bob act no more.
    error_of(await stack.client.get("/v1/conversations", headers=bobs_key), 401, "api_key_revoked")

    for path in ("/v1/admin/users/bob/export", "/v1/admin/users/bob/data"):
        method = stack.client.get if path.endswith("export") else stack.client.delete
        error_of(await method(path), 403, "missing_scope")
    error_of(await stack.as_user(scopes=("chat",)).get("/v1/me/export"), 403, "missing_scope")
    error_of(await admin.get("/v1/admin/users/b%20ob/export"), 422, "invalid_request")

"""A user's long-term memory through the public API, in front of the real services: a fact
stated in one conversation is kept after the turn, listed, recalled into another
conversation's prompt (what the provider receives), edited and deleted; a conversation can
turn memory off; nobody else sees or changes another's memories."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]
TEAL = "The user's favourite colour is teal."


@pytest.fixture
def background_concurrency() -> int:
    """Memory is kept by conversation's background work: run it."""
    return 2


async def _turn(client: httpx.AsyncClient, cid: str, content: str) -> dict[str, Any]:
    turn = await client.post(f"/v1/conversations/{cid}/messages", json={"content": content})
    assert turn.status_code == 200, turn.text
    found: dict[str, Any] = turn.json()
    return found


async def _conversation(client: httpx.AsyncClient, **settings: Any) -> str:
    created = await client.post("/v1/conversations", json={"settings": settings})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _remembered(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """The caller's memories once there are ``count`` (facts are kept in the background,
    after the turn)."""
    for _ in range(300):
        listed = await client.get("/v1/memories")
        assert listed.status_code == 200, listed.text
        memories: list[dict[str, Any]] = listed.json()["memories"]
        if len(memories) >= count:
            return memories
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} memories, found {memories}")


def _prompt_of(stack: Any, question: str) -> str:
    """Everything the provider was sent for the turn that asked ``question``."""
    [request] = [
        r
        for r in stack.provider.requests
        if r.body.get("stream") and r.body["messages"][-1]["content"] == question
    ]
    return "\n".join(str(m["content"]) for m in request.body["messages"])


async def test_a_fact_stated_once_is_recalled_in_another_conversation(
    stack: Any, error_of: ErrorOf
) -> None:
    ann = stack.client
    first = await _conversation(ann)
    said = await _turn(ann, first, "Please remember that my favourite colour is teal.")
    [memory] = await _remembered(ann, 1)
    assert memory["content"] == TEAL
    assert memory["source_message_id"] == said["user_message_id"]
    assert memory["conversation_id"] == first
    assert memory["created_at"].endswith("Z")
    assert memory["updated_at"].endswith("Z")
    assert set(memory) == {
        "id",
        "content",
        "source_message_id",
        "conversation_id",
        "created_at",
        "updated_at",
    }
    assert (await ann.get("/v1/memories")).json()["next_page_token"] is None

    question = "Which colour should I paint my bike?"
    await _turn(ann, await _conversation(ann), question)
    prompt = _prompt_of(stack, question)
    assert "<memories>" in prompt
    assert f"<memory>{TEAL}</memory>" in prompt

    # A conversation with memory off recalls nothing (and says so in its settings).
    quiet = await ann.post("/v1/conversations", json={"settings": {"memory_enabled": False}})
    assert quiet.json()["settings"]["memory_enabled"] is False
    question = "Which colour for my car, then?"
    await _turn(ann, quiet.json()["id"], question)
    assert "teal" not in _prompt_of(stack, question)
    on = await ann.patch(
        f"/v1/conversations/{quiet.json()['id']}", json={"settings": {"memory_enabled": True}}
    )
    assert on.json()["settings"]["memory_enabled"] is True
    error_of(
        await ann.post("/v1/conversations", json={"settings": {"memory_enabled": "no"}}),
        422,
        "invalid_request",
    )


async def test_editing_and_deleting_a_memory(stack: Any, error_of: ErrorOf) -> None:
    ann = stack.client
    await _turn(ann, await _conversation(ann), "Remember that I am vegetarian.")
    [memory] = await _remembered(ann, 1)
    path = f"/v1/memories/{memory['id']}"

    edited = await ann.patch(path, json={"content": "The user is vegan."})
    assert edited.status_code == 200, edited.text
    assert (edited.json()["id"], edited.json()["content"]) == (memory["id"], "The user is vegan.")
    assert [m["content"] for m in await _remembered(ann, 1)] == ["The user is vegan."]
    question = "Any vegan recipe ideas for tonight?"
    await _turn(ann, await _conversation(ann), question)
    assert "<memory>The user is vegan.</memory>" in _prompt_of(stack, question)

    error_of(await ann.patch(path, json={"content": ""}), 422, "invalid_request")
    error_of(await ann.patch(path, json={"content": "   "}), 422, "empty_memory")
    error_of(await ann.patch(path, json={"content": "x" * 501}), 422, "invalid_request")
    error_of(await ann.patch(path, json={"content": "a", "id": "x"}), 422, "invalid_request")
    reader = stack.as_user(scopes=("read",))
    assert (await reader.get("/v1/memories")).status_code == 200
    error_of(await reader.patch(path, json={"content": "Mine."}), 403, "missing_scope")
    error_of(await reader.delete(path), 403, "missing_scope")
    error_of(await ann.get("/v1/memories?page_size=0"), 422, "invalid_request")

    deleted = await ann.delete(path)
    assert deleted.status_code == 204
    assert (await ann.get("/v1/memories")).json()["memories"] == []
    error_of(await ann.delete(path), 404, "memory_not_found")
    error_of(await ann.patch(path, json={"content": "Back."}), 404, "memory_not_found")


async def test_another_user_or_tenant_never_sees_or_changes_them(
    stack: Any, error_of: ErrorOf
) -> None:
    ann = stack.client
    await _turn(ann, await _conversation(ann), "My name is Ann.")
    [memory] = await _remembered(ann, 1)
    for other in (stack.as_user(user="bob"), stack.as_user(tenant="globex")):
        assert (await other.get("/v1/memories")).json()["memories"] == []
        path = f"/v1/memories/{memory['id']}"
        error_of(await other.patch(path, json={"content": "Mine."}), 404, "memory_not_found")
        error_of(await other.delete(path), 404, "memory_not_found")
        await _turn(other, await _conversation(other), "What is my name?")
    prompts = _prompt_of_each(stack, "What is my name?")
    assert len(prompts) == 2
    assert not any("<memories>" in p for p in prompts)
    assert [m["content"] for m in await _remembered(ann, 1)] == ["The user's name is Ann."]

    # Deleting Ann's data deletes her memories, and says how many.
    deleted = await ann.delete("/v1/me/data")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"]["memories"] == 1
    assert (await ann.get("/v1/memories")).json()["memories"] == []


def _prompt_of_each(stack: Any, question: str) -> list[str]:
    return [
        "\n".join(str(m["content"]) for m in r.body["messages"])
        for r in stack.provider.requests
        if r.body.get("stream") and r.body["messages"][-1]["content"] == question
    ]

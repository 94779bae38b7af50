"""A turn's life beyond sending it, through the public API in front of the real services:
event ids, regenerating the last answer, rating it, stopping it from another connection, and
reading it back after a lost connection or from a second one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from parley_fakes import Behaviour

Event = tuple[str | None, str, dict[str, Any]]
ReadEvents = Callable[[httpx.Response], AsyncIterator[Event]]
ParseSse = Callable[[str], list[Event]]
ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]
STREAM = {"Accept": "text/event-stream"}
SLOW = Behaviour(tokens=400, token_delay_ms=10)


async def _conversation(client: httpx.AsyncClient) -> str:
    created = await client.post("/v1/conversations", json={"title": "turns"})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _until_deltas(events: AsyncIterator[Event], count: int) -> tuple[list[Event], str]:
    """Events read until ``count`` deltas arrived, and the text they carried."""
    seen: list[Event] = []
    async for event in events:
        seen.append(event)
        if sum(name == "delta" for _, name, _ in seen) >= count:
            break
    return seen, "".join(data["text"] for _, name, data in seen if name == "delta")


async def test_every_event_of_a_turn_carries_the_answer_id_and_its_position(
    stack: Any, parse_sse: ParseSse
) -> None:
    cid = await _conversation(stack.client)
    sent = await stack.client.post(
        f"/v1/conversations/{cid}/messages", json={"content": "Say something."}, headers=STREAM
    )
    assert sent.status_code == 200
    events = parse_sse(sent.text)
    answer_id = events[0][2]["assistant_message_id"]
    assert [event_id for event_id, _, _ in events] == [
        f"{answer_id}:{n}" for n in range(len(events))
    ]
    assert [name for _, name, _ in events][-1] == "done"


async def test_regenerate_answers_again_and_supersedes_the_last_answer(
    stack: Any, parse_sse: ParseSse, error_of: ErrorOf
) -> None:
    client = stack.client
    cid = await _conversation(client)
    empty = await client.post(f"/v1/conversations/{cid}/regenerate")
    error_of(empty, 409, "nothing_to_regenerate")

    first = await client.post(f"/v1/conversations/{cid}/messages", json={"content": "Hello?"})
    assert first.status_code == 200, first.text
    old = first.json()["message"]

    stack.provider.push(Behaviour(text="A second answer."))
    again = await client.post(f"/v1/conversations/{cid}/regenerate", headers=STREAM)
    events = parse_sse(again.text)
    names = [name for _, name, _ in events]
    assert (names[0], names[-1]) == ("accepted", "done")
    new = events[-1][2]["message"]
    assert new["content"] == "A second answer."
    assert new["id"] != old["id"]
    assert events[0][2]["user_message_id"] == first.json()["user_message_id"]
    # The provider was asked the same question again.
    assert stack.provider.requests[-1].body["messages"][-1]["content"] == "Hello?"

    listed = (await client.get(f"/v1/conversations/{cid}/messages")).json()["messages"]
    assert [m["id"] for m in listed] == [first.json()["user_message_id"], new["id"]]
    # The superseded answer is still there to read, by its id.
    kept = await client.get(f"/v1/conversations/{cid}/messages/{old['id']}")
    assert (kept.status_code, kept.json()["content"]) == (200, old["content"])

    # As JSON, with another model alias for this answer only.
    local = await client.post(f"/v1/conversations/{cid}/regenerate", json={"model": "local"})
    assert local.status_code == 200, local.text
    assert local.json()["message"]["model"].startswith("local/")
    unknown = await client.post(f"/v1/conversations/{cid}/regenerate", json={"model": "gpt-9"})
    error_of(unknown, 422, "unknown_model")
    extra = await client.post(f"/v1/conversations/{cid}/regenerate", json={"temperature": 1})
    error_of(extra, 422, "invalid_request")


async def test_an_answer_is_rated_and_the_rating_replaced(stack: Any, error_of: ErrorOf) -> None:
    client = stack.client
    cid = await _conversation(client)
    turn = (await client.post(f"/v1/conversations/{cid}/messages", json={"content": "Hi"})).json()
    path = f"/v1/conversations/{cid}/messages/{turn['assistant_message_id']}/feedback"
    down = await client.put(path, json={"rating": "down", "comment": "Too vague."})
    assert down.status_code == 200, down.text
    assert (down.json()["rating"], down.json()["comment"]) == ("down", "Too vague.")
    up = await client.put(path, json={"rating": "up"})
    assert (up.json()["rating"], up.json()["comment"]) == ("up", "")

    user_path = f"/v1/conversations/{cid}/messages/{turn['user_message_id']}/feedback"
    error_of(await client.put(user_path, json={"rating": "up"}), 409, "feedback_on_user_message")
    error_of(await client.put(path, json={"rating": "meh"}), 422, "invalid_request")
    error_of(
        await client.put(path, json={"rating": "up", "comment": "x" * 2001}), 422, "invalid_request"
    )
    for other in (stack.as_user(user="bob"), stack.as_user(tenant="globex")):
        error_of(await other.put(path, json={"rating": "up"}), 404, "conversation_not_found")


async def test_an_answer_streaming_elsewhere_is_stopped_and_stored_cancelled(
    stack: Any, read_events: ReadEvents, error_of: ErrorOf
) -> None:
    client = stack.client
    cid = await _conversation(client)
    stack.provider.push(SLOW)
    async with client.stream(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "Go on."}, headers=STREAM
    ) as streaming:
        events = read_events(streaming)
        seen, text = await _until_deltas(events, 3)
        answer_id = seen[0][2]["assistant_message_id"]
        # Another connection (another tab, a server) stops it.
        other = stack.as_user()
        stopped = await other.post(f"/v1/conversations/{cid}/messages/{answer_id}/cancel")
        assert stopped.status_code == 200, stopped.text
        stored = stopped.json()
        assert (stored["status"], stored["finish_reason"], stored["error_code"]) == (
            "cancelled",
            "cancelled",
            "cancelled",
        )
        assert stored["content"].startswith(text)
        rest = [event async for event in events]
    assert [name for _, name, _ in rest if name != "delta"] == ["error"]
    assert rest[-1][2]["code"] == "cancelled"
    assert rest[-1][2]["assistant_message_id"] == answer_id
    streamed = text + "".join(data["text"] for _, name, data in rest if name == "delta")
    assert stored["content"] == streamed
    # The provider's stream was closed long before its 400 tokens.
    recorded = stack.provider.requests[-1]
    for _ in range(100):
        if recorded.outcome:
            break
        await asyncio.sleep(0.02)
    assert recorded.outcome == "disconnected"
    assert recorded.tokens_sent < 400
    # Stopping it again, or a finished answer, changes nothing.
    again = await other.post(f"/v1/conversations/{cid}/messages/{answer_id}/cancel")
    assert (again.status_code, again.json()) == (200, stored)
    listed = (await client.get(f"/v1/conversations/{cid}/messages")).json()["messages"]
    error_of(
        await client.post(f"/v1/conversations/{cid}/messages/{listed[0]['id']}/cancel"),
        409,
        "not_an_answer",
    )
    foreign = stack.as_user(tenant="globex")
    error_of(
        await foreign.post(f"/v1/conversations/{cid}/messages/{answer_id}/cancel"),
        404,
        "conversation_not_found",
    )
    reader = stack.as_user(scopes=("read",))
    error_of(
        await reader.post(f"/v1/conversations/{cid}/messages/{answer_id}/cancel"),
        403,
        "missing_scope",
    )


async def test_a_second_connection_follows_an_answer_to_its_end(
    stack: Any, read_events: ReadEvents
) -> None:
    client = stack.client
    cid = await _conversation(client)
    stack.provider.push(Behaviour(tokens=60, token_delay_ms=15))
    async with client.stream(
        "POST", f"/v1/conversations/{cid}/messages", json={"content": "Go on."}, headers=STREAM
    ) as streaming:
        live = read_events(streaming)
        seen, _ = await _until_deltas(live, 2)
        answer_id = seen[0][2]["assistant_message_id"]
        await asyncio.sleep(0.3)  # some text is saved
        mid = await client.get(f"/v1/conversations/{cid}/messages/{answer_id}")
        assert mid.json()["status"] == "in_progress"
        assert mid.json()["content"]
        follower = stack.as_user()
        async with follower.stream(
            "GET", f"/v1/conversations/{cid}/messages/{answer_id}/events"
        ) as following:
            assert following.headers["content-type"].startswith("text/event-stream")
            followed = [event async for event in read_events(following)]
        rest = [event async for event in live]
    names = [name for _, name, _ in followed]
    assert names[0] == "snapshot"
    assert names[-2:] == ["usage", "done"]
    assert set(names[1:-2]) <= {"delta"}
    text = followed[0][2]["text"] + "".join(d["text"] for _, n, d in followed if n == "delta")
    done = followed[-1][2]["message"]
    assert (done["status"], done["content"]) == ("complete", text)
    live_done = next(data for _, name, data in rest if name == "done")["message"]
    assert live_done["content"] == text
    assert [event_id for event_id, _, _ in followed] == [
        f"{answer_id}:{n}" for n in range(len(followed))
    ]


async def test_a_client_that_lost_its_stream_reads_the_stored_answer_back(
    stack: Any, read_events: ReadEvents, parse_sse: ParseSse, error_of: ErrorOf
) -> None:
    client = stack.client
    cid = await _conversation(client)
    stack.provider.push(SLOW)
    body = {"content": "Tell me everything."}
    async with client.stream(
        "POST", f"/v1/conversations/{cid}/messages", json=body, headers=STREAM
    ) as streaming:
        seen, text = await _until_deltas(read_events(streaming), 3)
    last_id = seen[-1][0]
    assert last_id is not None
    answer_id = last_id.rpartition(":")[0]
    requests = len(stack.provider.requests)
    # The connection is gone, and with it the answer (a client leaving stops it). What an SSE
    # client does on reconnecting: the same request again, with the last id it saw.
    stored: dict[str, Any] = {}
    for _ in range(50):
        stored = (await client.get(f"/v1/conversations/{cid}/messages/{answer_id}")).json()
        if stored["status"] != "in_progress":
            break
        await asyncio.sleep(0.05)
    resumed = await client.post(
        f"/v1/conversations/{cid}/messages",
        json=body,
        headers={**STREAM, "Last-Event-ID": last_id},
    )
    assert resumed.status_code == 200, resumed.text
    events = parse_sse(resumed.text)
    assert [name for _, name, _ in events] == ["snapshot", "error"]
    assert events[0][2] == {"assistant_message_id": answer_id, "text": stored["content"]}
    assert stored["content"].startswith(text)
    assert (events[1][2]["code"], events[1][2]["retryable"]) == ("cancelled", False)
    position = int(last_id.rpartition(":")[2])
    assert [event_id for event_id, _, _ in events] == [
        f"{answer_id}:{position + 1}",
        f"{answer_id}:{position + 2}",
    ]
    # Nothing was sent again.
    assert len(stack.provider.requests) == requests
    listed = (await client.get(f"/v1/conversations/{cid}/messages")).json()["messages"]
    assert len(listed) == 2

    bad = await client.post(
        f"/v1/conversations/{cid}/messages",
        json=body,
        headers={**STREAM, "Last-Event-ID": "not an id"},
    )
    error_of(bad, 422, "invalid_request")
    question = listed[0]["id"]
    error_of(
        await client.get(f"/v1/conversations/{cid}/messages/{question}/events"),
        409,
        "not_an_answer",
    )
    error_of(
        await stack.as_user(user="bob").get(f"/v1/conversations/{cid}/messages/{answer_id}/events"),
        404,
        "conversation_not_found",
    )


async def test_a_turn_waited_for_as_json_and_stopped_elsewhere_is_a_409(
    stack: Any, read_events: ReadEvents, error_of: ErrorOf
) -> None:
    client = stack.client
    cid = await _conversation(client)
    stack.provider.push(SLOW)
    waiting = asyncio.create_task(
        client.post(f"/v1/conversations/{cid}/messages", json={"content": "Go on."})
    )
    answer_id = ""
    for _ in range(100):
        listed = (await client.get(f"/v1/conversations/{cid}/messages")).json()["messages"]
        if len(listed) == 2:
            answer_id = listed[1]["id"]
            break
        await asyncio.sleep(0.02)
    assert answer_id
    stopped = await stack.as_user().post(f"/v1/conversations/{cid}/messages/{answer_id}/cancel")
    assert stopped.json()["status"] == "cancelled"
    error = error_of(await waiting, 409, "cancelled")
    assert error["assistant_message_id"] == answer_id

"""Size limits: a body over its cap is refused while it is read (413, the rest never read, the
connection closed), and a document over ``MAX_DOCUMENT_BYTES`` is a 413 a client will not
retry, whether the gateway or ingest finds it."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pydantic
import pytest

from parley.conversation.v1 import conversation_pb2 as conv
from parley_gateway.settings import Settings
from parley_runtime.errors import ResourceExhausted

# The ``api`` and ``error_of`` fixtures (conftest.py).
Api = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Any]]]
ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]


CAP = 64 * 1024
TENS_OF_MB = 50 * 1024 * 1024


def _post_raw(
    port: int, path: str, token: str, head: dict[str, str], chunks: Iterator[bytes]
) -> tuple[int, dict[str, str], dict[str, Any], int]:
    """POST over a plain socket as a careful client does: write ``chunks`` while watching for
    an early answer, and stop at the answer. The status, headers, JSON body, bytes written."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {token}"]
    lines += [f"{name}: {value}" for name, value in head.items()]
    received = b""
    written = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.setblocking(False)
        pending = next(chunks, b"")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
            if b"\r\n\r\n" in received and received.endswith(b"}"):
                break
            if pending:
                try:
                    sent = sock.send(pending)
                    written += sent
                    pending = pending[sent:] or next(chunks, b"")
                except BlockingIOError:
                    time.sleep(0.001)
                except (BrokenPipeError, ConnectionResetError):
                    pending = b""  # the server closed its side: its answer is on the way
            else:
                time.sleep(0.001)
    head_part, _, payload = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return int(status_line.split()[1]), headers, json.loads(payload), written


def _port(client: httpx.AsyncClient) -> int:
    assert client.base_url.port is not None
    return client.base_url.port


def _token(client: Any) -> str:
    return str(client.headers["Authorization"]).removeprefix("Bearer ")


async def test_an_announced_body_of_tens_of_mb_is_refused_before_it_is_read(api: Api) -> None:
    async with api(max_body_bytes=CAP, max_message_chars=1000) as (client, fakes):
        status, headers, body, written = await asyncio.to_thread(
            _post_raw,
            _port(client),
            "/v1/conversations/c1/messages",
            _token(client),
            {"Content-Type": "application/json", "Content-Length": str(TENS_OF_MB)},
            iter([b"x" * 65536] * (TENS_OF_MB // 65536)),
        )
    assert status == 413
    assert body["error"]["code"] == "body_too_large"
    assert f"limit of {CAP} bytes" in body["error"]["message"]
    assert body["error"]["request_id"] == headers["x-request-id"]
    assert headers["connection"] == "close"
    assert "retry-after" not in headers
    assert written < TENS_OF_MB // 2
    assert fakes.calls == []


async def test_a_chunked_body_is_refused_once_it_passes_the_cap(api: Api) -> None:
    async with api(max_body_bytes=CAP, max_message_chars=1000) as (client, fakes):
        status, headers, body, written = await asyncio.to_thread(
            _post_raw,
            _port(client),
            "/v1/conversations/c1/messages",
            _token(client),
            {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            iter([b"10000\r\n" + b"x" * 65536 + b"\r\n"] * (TENS_OF_MB // 65536)),
        )
    assert status == 413
    assert body["error"]["code"] == "body_too_large"
    assert body["error"]["request_id"] == headers["x-request-id"]
    assert written < TENS_OF_MB // 2
    assert fakes.calls == []


async def test_a_message_at_its_limit_fits_the_cap_however_it_is_escaped(api: Api) -> None:
    settings = {"max_message_chars": 100, "max_body_bytes": 12 * 100 + 1024}
    async with api(**settings) as (client, fakes):
        fakes.conversation.turn = [
            conv.TurnEvent(done=conv.TurnDone(message=conv.Message(id="a1", content="ok")))
        ]
        # Every character outside the BMP: two \uXXXX escapes each, as ensure_ascii sends it.
        body = json.dumps({"content": "😀" * 100}, ensure_ascii=True)
        response = await client.post(
            "/v1/conversations/c1/messages",
            content=body,
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 200
    assert fakes.conversation.calls[0].request.content == "😀" * 100


async def test_a_document_over_its_limit_is_413_without_retry_after(
    api: Api, error_of: ErrorOf
) -> None:
    async with api(max_document_bytes=1000) as (client, fakes):
        response = await client.post(
            "/v1/knowledge-bases/kb/documents", json={"content": "x" * 1001}
        )
    error = error_of(response, 413, "document_too_large")
    assert "limit of 1000 bytes" in error["message"]
    assert "retry-after" not in response.headers
    assert fakes.calls == []


async def test_a_document_ingest_finds_too_large_is_413_without_retry_after(
    api: Api, error_of: ErrorOf
) -> None:
    async with api() as (client, fakes):
        fakes.ingest.failure = ResourceExhausted(
            "the document exceeds the limit of 10 bytes", code="document_too_large"
        )
        response = await client.post(
            "/v1/knowledge-bases/kb/documents", json={"content": "x" * 100}
        )
    error_of(response, 413, "document_too_large")
    assert "retry-after" not in response.headers
    assert len(fakes.ingest.calls) == 1


async def test_a_document_body_may_pass_the_cap_of_other_bodies(api: Api) -> None:
    async with api(max_body_bytes=CAP, max_message_chars=1000) as (client, fakes):
        response = await client.post(
            "/v1/knowledge-bases/kb/documents", json={"content": "x" * (2 * CAP)}
        )
    assert response.status_code == 201
    assert len(fakes.ingest.calls[0].request.content) == 2 * CAP


def test_caps_that_a_message_or_document_at_its_limit_cannot_fit_stop_the_gateway() -> None:
    with pytest.raises(pydantic.ValidationError, match="MAX_BODY_BYTES"):
        Settings(max_message_chars=32_000, max_body_bytes=100_000)
    with pytest.raises(pydantic.ValidationError, match="MAX_DOCUMENT_BODY_BYTES"):
        Settings(max_document_bytes=1_000_000, max_document_body_bytes=1_000_000)

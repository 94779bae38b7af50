"""Files uploaded as multipart/form-data, streamed to the real ingest service: the type is read
from the bytes whatever the client says, the size limit holds while the body is read, and a
refused file leaves nothing stored."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]
UPLOAD = "/v1/knowledge-bases/handbook/documents/upload"
LEAVE = b"# Leave\n\nEmployees have 25 days of paid leave a year.\n\n# Travel\n\nBook trains.\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02"


async def _job_done(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    for _ in range(200):
        job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError("the job did not end")


async def _stored(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    listed = await client.get("/v1/knowledge-bases/handbook/documents")
    documents: list[dict[str, Any]] = listed.json()["documents"]
    return documents


async def test_a_file_is_stored_indexed_and_found(stack: Any) -> None:
    client = stack.client
    response = await client.post(
        UPLOAD,
        data={
            "title": "Leave policy",
            "external_id": "hr-leave",
            "metadata": json.dumps({"team": "hr"}),
        },
        files={"file": ("C:\\fakepath\\leave.md", LEAVE, "application/octet-stream")},
    )
    assert response.status_code == 201, response.text
    document = response.json()["document"]
    assert (document["title"], document["filename"], document["content_type"]) == (
        "Leave policy",
        "leave.md",
        "text/markdown",
    )
    assert (document["size_bytes"], document["metadata"]) == (len(LEAVE), {"team": "hr"})
    assert document["external_id"] == "hr-leave"
    assert (await _job_done(client, response.json()["job"]["id"]))["state"] == "succeeded"
    found = await client.post(
        "/v1/knowledge-bases/handbook/search",
        json={"query": "How many days of leave?", "top_k": 2, "filters": {"team": "hr"}},
    )
    assert found.status_code == 200, found.text
    hits = found.json()["results"]
    assert hits[0]["document_id"] == document["id"]
    assert "25 days" in hits[0]["text"]
    assert found.json()["embedding_model"]
    none = await client.post(
        "/v1/knowledge-bases/handbook/search",
        json={"query": "leave", "filters": {"team": ["finance", "legal"]}},
    )
    assert none.json()["results"] == []

    again = await client.post(UPLOAD, files={"file": ("copy.md", LEAVE, "text/markdown")})
    assert (again.status_code, again.json()["deduplicated"]) == (201, True)
    assert again.json()["document"]["id"] == document["id"]


TYPED = [
    ("notes.txt", "text/plain", b"<!doctype html><html><body><p>Hi</p></body></html>", "text/html"),
    ("page.html", "text/html", b"<p>Employees have <b>25 days</b>.</p>", "text/html"),
    ("page.md", "text/html", b"# Not HTML at all\n\nJust *Markdown*.", "text/markdown"),
    ("readme", "", codecs.BOM_UTF8 + b"Plain text with a BOM.", "text/plain"),
    ("report.html", "text/html", b"BMW sales were up; no tags here.", "text/plain"),
]
REFUSED = [
    (PNG, "a PNG image"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "a JPEG image"),
    (b"\x1f\x8b\x08\x00\x00\x00", "a gzip archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00", "a legacy Office document"),
    ("Leave policy".encode("utf-16"), "UTF-16 or UTF-32 text"),
    (b"\x7fELF\x02\x01\x01", "an executable"),
    (b"MZ\x90\x00\x03\x00", "an executable"),
    (b"text with a \x00 in it", "binary data"),
]


async def test_the_type_is_read_from_the_bytes(stack: Any) -> None:
    for n, (name, declared, content, sniffed) in enumerate(TYPED):
        response = await stack.client.post(
            f"/v1/knowledge-bases/typed-{n}/documents/upload",
            files={"file": (name, content, declared)},
        )
        assert response.status_code == 201, (name, response.text)
        assert response.json()["document"]["content_type"] == sniffed, name


async def test_a_file_no_knowledge_base_takes_is_refused_at_its_first_bytes(
    stack: Any, error_of: ErrorOf
) -> None:
    for content, named in REFUSED:
        # Named and declared as Markdown: the bytes decide.
        response = await stack.client.post(
            UPLOAD, files={"file": ("leave.md", content, "text/markdown")}
        )
        error = error_of(response, 415, "unsupported_content_type")
        assert named in error["message"], (named, error)
    assert await _stored(stack.client) == []


async def test_a_file_that_is_not_text_is_refused_early_while_it_streams(
    stack: Any, error_of: ErrorOf
) -> None:
    """A PNG with a Markdown name, larger than the first bytes screened: refused before the
    rest is sent on."""
    content = PNG + b"\x00" * (stack.settings.max_document_bytes - len(PNG))
    response = await stack.client.post(
        UPLOAD, files={"file": ("leave.md", content, "text/markdown")}
    )
    error_of(response, 415, "unsupported_content_type")
    assert await _stored(stack.client) == []


async def test_a_declared_type_the_bytes_contradict_is_refused(
    stack: Any, error_of: ErrorOf
) -> None:
    response = await stack.client.post(
        UPLOAD, files={"file": ("leave.pdf", LEAVE, "application/pdf")}
    )
    error_of(response, 422, "content_type_mismatch")
    assert await _stored(stack.client) == []


async def test_a_file_over_the_limit_is_413_and_nothing_stored(
    stack: Any, error_of: ErrorOf
) -> None:
    limit = stack.settings.max_document_bytes
    response = await stack.client.post(
        UPLOAD, files={"file": ("big.md", b"a" * (limit + 1), "text/markdown")}
    )
    error = error_of(response, 413, "document_too_large")
    assert f"limit of {limit} bytes" in error["message"]
    assert "retry-after" not in response.headers
    assert await _stored(stack.client) == []
    at_limit = await stack.client.post(
        UPLOAD, files={"file": ("big.md", b"a" * limit, "text/markdown")}
    )
    assert at_limit.status_code == 201, at_limit.text


def _post_chunked(
    port: int, token: str, boundary: str, pieces: Iterator[bytes]
) -> tuple[int, dict[str, Any], int]:
    """POST a chunked multipart body over a plain socket, stopping at the server's answer:
    its status, JSON body and the bytes of file written by then."""
    head = (
        f"POST {UPLOAD} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    received, written = b"", 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        deadline = time.monotonic() + 10
        for piece in pieces:
            if time.monotonic() > deadline or b"\r\n\r\n" in received:
                break
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                written += len(piece)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.002)
            with contextlib.suppress(BlockingIOError):
                received += sock.recv(65536)
        sock.setblocking(True)
        sock.settimeout(5)
        while not received.endswith(b"}"):
            more = sock.recv(65536)
            if not more:
                break
            received += more
    status_line, _, rest = received.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    if b"\r\n" in body[:8]:  # a chunked answer: its first chunk
        body = body.partition(b"\r\n")[2].rpartition(b"}")[0] + b"}"
    return int(status_line.split()[1]), json.loads(body), written


async def test_the_limit_holds_while_the_body_is_read(stack: Any) -> None:
    """A file sent in chunks, without a length, is refused once it passes the limit: the
    rest is never read."""
    limit = stack.settings.max_document_bytes
    boundary = "parley-boundary"
    opening = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.md"\r\n'
        "Content-Type: text/markdown\r\n\r\n"
    ).encode()
    pieces = iter([opening, *[b"a" * 4096] * (20 * limit // 4096)])
    token = stack.client.headers["Authorization"].removeprefix("Bearer ")
    port = stack.client.base_url.port
    status, body, written = await asyncio.to_thread(_post_chunked, port, token, boundary, pieces)
    assert status == 413
    assert body["error"]["code"] in ("document_too_large", "body_too_large")
    assert written < 4 * limit
    assert await _stored(stack.client) == []


async def test_malformed_forms_are_refused_naming_the_fault(stack: Any, error_of: ErrorOf) -> None:
    client = stack.client
    after = await client.post(
        UPLOAD,
        content=(
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.md"\r\n\r\n'
            b'# A\r\n--b\r\nContent-Disposition: form-data; name="title"\r\n\r\nLate\r\n--b--\r\n'
        ),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert "before the file" in error_of(after, 422, "invalid_multipart")["message"]
    unknown = await client.post(UPLOAD, data={"colour": "red"}, files={"file": ("a.md", b"# A")})
    assert "form.colour" in error_of(unknown, 422, "invalid_request")["message"]
    metadata = await client.post(
        UPLOAD, data={"metadata": "[1, 2]"}, files={"file": ("a.md", b"# A")}
    )
    assert "form.metadata" in error_of(metadata, 422, "invalid_request")["message"]
    no_file = await client.post(
        UPLOAD,
        content=b'--b\r\nContent-Disposition: form-data; name="title"\r\n\r\nT\r\n--b--\r\n',
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    error_of(no_file, 422, "missing_file")
    cut = await client.post(
        UPLOAD,
        content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.md"\r\n\r\n# A',
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    error_of(cut, 422, "invalid_multipart")
    as_json = await client.post(UPLOAD, json={"content": "# A"})
    error_of(as_json, 415, "unsupported_content_type")
    reader = stack.as_user(scopes=("read",))
    error_of(await reader.post(UPLOAD, files={"file": ("a.md", b"# A")}), 403, "missing_scope")
    assert await _stored(client) == []

"""A document uploaded as a file (multipart/form-data), streamed to ingest as it arrives.

The body is parsed as it is read, never spooled to disk: form fields (``title``,
``external_id``, ``metadata``) come first, then one ``file`` part. Once the file's first
:data:`~parley_gateway.sniff.SNIFF_BYTES` are in, they are screened (sniff.py: a kind of file
no knowledge base takes is refused at once), ingest's ``UploadDocument`` client stream opens
with the metadata, and every piece read goes on to it at once; ingest reads the document's
type from the bytes, the part's ``Content-Type`` and the file name only choosing among the
types they allow. The file may not pass ``MAX_DOCUMENT_BYTES``: the byte past it is a 413
(``document_too_large``), and the upload is cancelled at ingest, which stores nothing. The
stream to ingest ends only with the form's closing boundary: a form refused at its end (a
field after the file) stores nothing either.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

import grpc
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from parley.ingest.v1 import ingest_pb2 as ing
from parley_gateway import views
from parley_gateway.adapters import Peers
from parley_gateway.auth import require
from parley_gateway.body_limit import UploadRoute
from parley_gateway.errors import as_parley_error, error_response, responses
from parley_gateway.inputs import KnowledgeBaseName
from parley_gateway.limits.http import RATE_LIMITED, route_class
from parley_gateway.settings import Settings
from parley_gateway.sniff import SNIFF_BYTES, declared_type, screen
from parley_runtime.context import Principal
from parley_runtime.errors import InvalidArgument, ParleyError, ResourceExhausted

router = APIRouter(
    prefix="/v1", tags=["documents"], route_class=UploadRoute, dependencies=[RATE_LIMITED]
)
FIELDS = {"title": 300, "external_id": 300, "metadata": 16_384}
# Pieces of the file waiting for ingest to take them; the body is read no faster.
QUEUED_PIECES = 16
# What is read of a refused body's rest so that the client, still writing it, reads the
# answer (closing on unread bytes resets the connection); past it, the connection closes.
DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 1.0
FORM = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                # In this order: the fields before the file.
                "properties": {
                    "title": {"type": "string", "maxLength": 300},
                    "external_id": {"type": "string", "maxLength": 300},
                    "metadata": {
                        "type": "string",
                        "description": "A JSON object of strings, copied onto every chunk.",
                        "example": '{"team": "hr"}',
                    },
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "UTF-8 text, Markdown or HTML, at most "
                        "MAX_DOCUMENT_BYTES; its type is read from its bytes.",
                    },
                },
            },
            "encoding": {"file": {"contentType": "text/plain, text/markdown, text/html"}},
        }
    },
}
CREATED_EXAMPLE = {
    "document": {
        "id": "doc_1",
        "knowledge_base_id": "handbook",
        "title": "Leave policy",
        "filename": "leave.md",
        "content_type": "text/markdown",
        "size_bytes": 1832,
        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "version": 1,
        "status": "pending",
        "chunk_count": 0,
        "metadata": {"team": "hr"},
        "external_id": None,
        "job_id": "job_1",
        "error": None,
        "created_at": "2026-12-04T10:00:00.000Z",
        "updated_at": "2026-12-04T10:00:00.000Z",
    },
    "job": {"id": "job_1", "document_id": "doc_1", "state": "queued", "progress": 0.0},
    "deduplicated": False,
}


class _Part:
    """A part of the form as its headers describe it."""

    def __init__(self, name: str, filename: str | None, content_type: str) -> None:
        self.name = name
        self.filename = filename
        self.content_type = content_type


class _Form:
    """A multipart body parsed as it is fed: what each chunk completed, in order (a part's
    start, a piece of its data, its end)."""

    def __init__(self, boundary: bytes) -> None:
        self.ended = False
        self._found: list[_Part | bytes | None] = []
        self._headers: dict[bytes, bytes] = {}
        self._name = b""
        self._value = b""
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def feed(self, chunk: bytes) -> list[_Part | bytes | None]:
        """What ``chunk`` completed: a :class:`_Part` when one starts, its data as bytes, None
        when it ends."""
        try:
            self._parser.write(chunk)
        except FormParserError:
            raise _malformed("the multipart body is malformed") from None
        found, self._found = self._found, []
        return found

    def _begin(self) -> None:
        self._headers = {}

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise _malformed("each part needs 'Content-Disposition: form-data; name=...'")
        filename = options.get(b"filename")
        self._found.append(
            _Part(
                options[b"name"].decode("utf-8", "replace"),
                None if filename is None else _basename(filename.decode("utf-8", "replace")),
                self._headers.get(b"content-type", b"").decode("latin-1"),
            )
        )

    def _data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._found.append(data[start:end])

    def _part_end(self) -> None:
        self._found.append(None)

    def _end(self) -> None:
        self.ended = True


def _malformed(message: str) -> InvalidArgument:
    return InvalidArgument(message, code="invalid_multipart")


def _basename(filename: str) -> str:
    """The file's own name: browsers may send a path (``C:\\fakepath\\leave.md``)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in name if c.isprintable())[:300]


def _field_value(name: str, raw: bytes) -> str:
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"form.{name}: must be UTF-8 text", code="invalid_request") from None
    if "\x00" in value:
        raise InvalidArgument(
            f"form.{name}: must not contain a NUL character", code="invalid_request"
        )
    return value


def _metadata(value: str) -> dict[str, str]:
    try:
        found = json.loads(value)
    except ValueError:
        found = None
    if not isinstance(found, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in found.items()
    ):
        raise InvalidArgument(
            "form.metadata: must be a JSON object of strings", code="invalid_request"
        )
    if len(found) > 50:
        raise InvalidArgument("form.metadata: at most 50 keys", code="invalid_request")
    return found


class _Upload:
    """Ingest's ``UploadDocument`` client stream of one file: the metadata, then each piece
    as it is queued; it ends at the ``None`` piece."""

    def __init__(self, peers: Peers, first: ing.UploadDocumentRequest, timeout: float) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUED_PIECES)
        self.call = peers.ingest.UploadDocument(self._messages(first), timeout=timeout)
        self.answer: asyncio.Future[ing.CreateDocumentResponse] = asyncio.ensure_future(
            self._answered()
        )

    async def _answered(self) -> ing.CreateDocumentResponse:
        response: ing.CreateDocumentResponse = await self.call
        return response

    async def _messages(
        self, first: ing.UploadDocumentRequest
    ) -> AsyncIterator[ing.UploadDocumentRequest]:
        yield first
        while (piece := await self.queue.get()) is not None:
            yield ing.UploadDocumentRequest(content=piece)

    async def send(self, piece: bytes | None) -> None:
        """Queue ``piece`` (None: the end), waiting while the queue is full; nothing waits once
        ingest has answered (it refused the upload)."""
        if self.answer.done():
            return
        if not self.queue.full():
            self.queue.put_nowait(piece)
            return
        put: asyncio.Future[None] = asyncio.ensure_future(self.queue.put(piece))
        waiting: set[asyncio.Future[object]] = {put, self.answer}  # type: ignore[arg-type]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        put.cancel()

    def cancel(self) -> None:
        self.call.cancel()
        self.answer.cancel()


@router.post(
    "/knowledge-bases/{knowledge_base_id}/documents/upload",
    status_code=201,
    response_model=None,
    responses={
        201: {"content": {"application/json": {"example": CREATED_EXAMPLE}}},
        **responses(401, 403, 413, 415, 422, 429, 500, 503),
    },
    openapi_extra={**route_class("documents"), "requestBody": FORM},
)
async def upload_document(
    knowledge_base_id: KnowledgeBaseName,
    request: Request,
    caller: Annotated[Principal, require("documents")],
) -> Response:
    """Add a file to a knowledge base (multipart/form-data: optional ``title``,
    ``external_id`` and ``metadata`` fields, then the ``file``). Its type is read from its
    bytes: 415 ``unsupported_content_type`` names what a refused file is (an image, an
    archive, UTF-16 text...), 422 ``content_type_mismatch`` a declared type the bytes
    contradict. The same bytes sent again return the existing document (``deduplicated``)."""
    kind, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidArgument(
            "send the file as multipart/form-data (with a boundary); JSON goes to "
            f"/v1/knowledge-bases/{knowledge_base_id}/documents",
            code="unsupported_content_type",
        )
    started: list[_Upload] = []  # the upload, once begun: a failure cancels it at ingest
    read_whole = False
    try:
        upload, read_whole = await _stream(knowledge_base_id, request, _Form(boundary), started)
        created = await upload.answer
    except (ParleyError, grpc.RpcError) as failed:
        for upload in started:
            upload.cancel()
        answer = error_response(as_parley_error(failed))
        if not read_whole and not await _drained(request):
            answer.headers["Connection"] = "close"  # the rest of the body is not read
        return answer
    except BaseException:
        for upload in started:
            upload.cancel()
        raise
    return JSONResponse(
        {
            "document": views.document(created.document),
            "job": views.job(created.job),
            "deduplicated": created.deduplicated,
        },
        status_code=201,
    )


async def _drained(request: Request) -> bool:
    """Whether the rest of a refused body was read to its end within :data:`DRAIN_BYTES`
    and :data:`DRAIN_SECONDS`."""
    read = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for chunk in request.stream():
                read += len(chunk)
                if read > DRAIN_BYTES:
                    return False
    except RuntimeError:
        return True  # Starlette's "Stream consumed": its last part was read already
    except (TimeoutError, HTTPException, ClientDisconnect):
        return False
    return True


async def _stream(
    kb: str, request: Request, form: _Form, started: list[_Upload]
) -> tuple[_Upload, bool]:
    """Read the body, streaming its file to ingest; the upload (also put in ``started`` as
    soon as it begins), and whether the body was read to its end (False when ingest answered
    first, refusing it)."""
    settings: Settings = request.app.state.settings
    peers: Peers = request.app.state.peers
    limit = settings.max_document_bytes
    fields: dict[str, str] = {}
    part: _Part | None = None
    value = bytearray()  # the current field's
    head = bytearray()  # the file's first bytes, until its type is known
    size = 0
    upload: _Upload | None = None
    file_seen = False

    def start(complete: bool) -> _Upload:
        assert part is not None
        assert part.filename is not None
        screen(bytes(head[:SNIFF_BYTES]), complete=complete)
        metadata = ing.DocumentMetadata(
            knowledge_base_id=kb,
            title=fields.get("title", ""),
            filename=part.filename,
            content_type=declared_type(part.content_type),
            metadata=_metadata(fields["metadata"]) if "metadata" in fields else {},
            external_id=fields.get("external_id", ""),
        )
        begun = _Upload(
            peers, ing.UploadDocumentRequest(document=metadata), settings.stream_timeout_seconds
        )
        started.append(begun)
        return begun

    async for chunk in request.stream():
        for item in form.feed(chunk):
            if isinstance(item, _Part):
                if file_seen:
                    raise _malformed(f"form.{item.name}: send fields before the file, one file")
                part, value = item, bytearray()
                if item.filename is None:
                    if item.name not in FIELDS:
                        raise InvalidArgument(
                            f"form.{item.name}: unknown field; send title, external_id, "
                            "metadata, then file",
                            code="invalid_request",
                        )
                elif item.name != "file":
                    raise InvalidArgument(
                        f"form.{item.name}: the file goes in the part named 'file'",
                        code="invalid_request",
                    )
                else:
                    file_seen = True
            elif part is None:
                continue  # the preamble
            elif part.filename is None:
                if item is None:
                    fields[part.name] = _field_value(part.name, bytes(value))
                    part = None
                    continue
                value += item
                if len(value) > FIELDS[part.name]:
                    raise InvalidArgument(
                        f"form.{part.name}: at most {FIELDS[part.name]} bytes",
                        code="invalid_request",
                    )
            elif item is None:
                if upload is None:
                    upload = start(complete=True)
                    if head:
                        await upload.send(bytes(head))
                await upload.send(None)
            else:
                size += len(item)
                if size > limit:
                    raise ResourceExhausted(
                        f"file: the document exceeds the limit of {limit} bytes",
                        code="document_too_large",
                    )
                if upload is None:
                    head += item
                    if len(head) >= SNIFF_BYTES:
                        upload = start(complete=False)
                        await upload.send(bytes(head))
                else:
                    await upload.send(item)
            if upload is not None and upload.answer.done():
                return upload, False  # ingest refused it; its error is the answer
    if not form.ended:
        raise _malformed("the multipart body ended before its closing boundary")
    if upload is None:
        raise InvalidArgument(
            "form.file: required (a part named 'file' with a filename)", code="missing_file"
        )
    # The upload ends only with the form: a part after the file refuses it, nothing stored.
    await upload.send(None)
    return upload, True

"""The request body cap, enforced while the body is read and before it is parsed.

A route refuses a body over its cap with 413 as soon as it knows: at once when
``Content-Length`` announces it, else when the bytes received pass the cap. The rest is never
read, and the connection closes after the answer, so a client cannot make the gateway buffer
or parse tens of megabytes. Every route's cap is ``MAX_BODY_BYTES``; a document upload's is
``MAX_DOCUMENT_BODY_BYTES`` (:class:`DocumentRoute`), a file upload's ``MAX_DOCUMENT_BYTES``
and a little room for its form (:class:`UploadRoute`).
"""

from __future__ import annotations

from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from parley_gateway.settings import Settings


class BodyTooLarge(HTTPException):
    """413: the body passed the route's cap. An ``HTTPException`` so that FastAPI, which
    turns any other failure while reading a body into a 400, lets it through; its envelope's
    code is ``body_too_large`` (errors.py)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            detail=f"the request body exceeds the limit of {limit} bytes",
            headers={"Connection": "close"},
        )


def _announced_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def capped(receive: Receive, limit: int) -> Receive:
    """``receive``, raising :class:`BodyTooLarge` once the body's bytes pass ``limit``."""
    received = 0

    async def receive_capped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_capped


class CappedRoute(APIRoute):
    """A route whose request body may not pass ``MAX_BODY_BYTES``."""

    def body_limit(self, settings: Settings) -> int:
        return settings.max_body_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.body_limit(scope["app"].state.settings)
        announced = _announced_length(scope)
        if announced is not None and announced > limit:
            raise BodyTooLarge(limit)
        await super().handle(scope, capped(receive, limit), send)


class DocumentRoute(CappedRoute):
    """A route that receives documents: its body may reach ``MAX_DOCUMENT_BODY_BYTES``."""

    def body_limit(self, settings: Settings) -> int:
        return settings.max_document_body_bytes


# Room in a multipart upload for its form fields, part headers and boundaries.
MULTIPART_OVERHEAD = 64 * 1024


class UploadRoute(CappedRoute):
    """A route that receives a file as multipart/form-data: its body may reach
    ``MAX_DOCUMENT_BYTES`` and the multipart overhead (the bytes are not escaped)."""

    def body_limit(self, settings: Settings) -> int:
        return settings.max_document_bytes + MULTIPART_OVERHEAD

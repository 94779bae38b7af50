"""Chat over one WebSocket: send messages, receive a turn's events as SSE sends them, stop an
answer, ping; ``/v1/ws``.

**Authentication at the handshake.** The credential (a token or an API key) comes in
``Authorization: Bearer <credential>``, or, since browsers cannot set headers on a WebSocket,
as the subprotocol ``bearer.<credential>`` offered beside ``parley.v1``
(``new WebSocket(url, ["parley.v1", "bearer." + token])``); the server then selects
``parley.v1``. Never in the URL, where proxies and browser history would keep it. A
handshake without a valid credential, or without the ``chat`` scope, is refused with the
HTTP status and error envelope a request would get (401, 403); no socket opens. The
credential is checked again before each turn, so a socket outliving its token is closed
(code 1008) at its next message, after an ``error`` event saying why.

**Frames** are JSON text, one object each, with a ``type``:

- client: ``send`` (``conversation_id``, ``content``, optional ``model``,
  ``idempotency_key``), ``regenerate`` (``conversation_id``, optional ``model``),
  ``cancel`` (stops the answer streaming on this socket), ``ping``; each may carry a ``ref``
  of the client's, echoed on every frame that answers it;
- server: the turn's events (``accepted``, ``citations``, ``delta``, ``tool_call``,
  ``tool_result``, ``usage``, then exactly one ``done`` or ``error``), each as
  ``{"type": <event>, "ref": ..., "id": "<assistant_message_id>:<n>", ...its data}``;
  ``pong``; and ``rejected`` for a frame that could not be served (``code``, ``message``,
  ``status``: the HTTP status the same request would have had, ``retry_after`` when
  limited): a turn refused before it began (an unknown conversation, a limit), a malformed
  frame. An ``error`` is always a turn's own end, as in SSE.

One answer streams at a time on a socket; a ``send`` meanwhile is rejected (``turn_running``).
A ``cancel`` stops it through conversation, whichever replica writes it: the turn's stream
ends with ``error`` ``cancelled`` and the answer is stored cancelled with its text so far. A
socket that closes mid-answer cancels it, as a client leaving an SSE stream does. Turns pass
the same rate limits, stream slots, quotas and guardrails as the HTTP routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Annotated, Any, Literal

import grpc
from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocketDisconnect

from parley.conversation.v1 import conversation_pb2 as conv
from parley_gateway.adapters import Peers
from parley_gateway.auth import identify
from parley_gateway.errors import envelope, status_for
from parley_gateway.guardrails import Guardrails
from parley_gateway.inputs import IDEMPOTENCY_KEY_PATTERN, NAME_PATTERN, Text
from parley_gateway.limits.http import admit_turn, check_rate
from parley_gateway.middleware import REQUEST_ID
from parley_gateway.routes.conversations import _first_event, _pair, _turn_events
from parley_gateway.settings import Settings
from parley_gateway.sse import TurnEncoder
from parley_runtime.context import Principal, request_id_var
from parley_runtime.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ParleyError,
    PermissionDenied,
    Unauthenticated,
    from_rpc_error,
)

log = logging.getLogger("parley.gateway")
router = APIRouter()
SUBPROTOCOL = "parley.v1"
BEARER_PROTOCOL = "bearer."
# Close codes: the credential expired or lost its scope (policy), the client is gone.
POLICY_VIOLATION = 1008
_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode

Ref = Annotated[str | None, Field(None, max_length=128, pattern=r"^[\x20-\x7e]*$")]
ConversationId = Annotated[str, Field(pattern=NAME_PATTERN)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: Ref = None


class SendFrame(_Frame):
    """Send a user message; its answer streams back."""

    type: Literal["send"]
    conversation_id: ConversationId
    content: Text
    model: Text | None = Field(None, max_length=100)
    idempotency_key: str | None = Field(None, pattern=IDEMPOTENCY_KEY_PATTERN)


class RegenerateFrame(_Frame):
    """Answer the conversation's last message again."""

    type: Literal["regenerate"]
    conversation_id: ConversationId
    model: Text | None = Field(None, max_length=100)


class CancelFrame(_Frame):
    """Stop the answer streaming on this socket."""

    type: Literal["cancel"]


class PingFrame(_Frame):
    """Ask for a ``pong``."""

    type: Literal["ping"]


Frame = Annotated[
    SendFrame | RegenerateFrame | CancelFrame | PingFrame, Field(discriminator="type")
]
FRAME: TypeAdapter[Frame] = TypeAdapter(Frame)


def _credential(websocket: WebSocket) -> str | None:
    """The credential of the handshake: the bearer header, else the ``bearer.`` subprotocol."""
    scheme, _, credential = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip()
    for offered in websocket.scope.get("subprotocols", ()):
        if offered.startswith(BEARER_PROTOCOL) and len(offered) > len(BEARER_PROTOCOL):
            return str(offered[len(BEARER_PROTOCOL) :])
    return None


async def _principal(websocket: WebSocket, credential: str | None) -> Principal:
    """The principal of the socket's credential, which must carry the ``chat`` scope."""
    if credential is None:
        raise Unauthenticated(
            "send 'Authorization: Bearer <token>', or offer the subprotocols "
            f"'{SUBPROTOCOL}' and 'bearer.<token>'",
            code="missing_credentials",
        )
    principal = await identify(websocket, credential)
    if not principal.has_scope("chat"):
        raise PermissionDenied("this request needs the 'chat' scope", code="missing_scope")
    return principal


@router.websocket("/v1/ws")
async def chat_socket(websocket: WebSocket) -> None:
    """Chat over one WebSocket (see the module docstring)."""
    incoming = websocket.headers.get("x-request-id", "")
    connection_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    request_id_var.set(connection_id)
    credential = _credential(websocket)
    try:
        principal = await _principal(websocket, credential)
    except ParleyError as refused:
        await _deny(websocket, refused)
        return
    offered = websocket.scope.get("subprotocols", ())
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    assert credential is not None
    await ChatSocket(websocket, credential, principal, connection_id).serve()


async def _deny(websocket: WebSocket, refused: ParleyError) -> None:
    """Refuse the handshake with the status and envelope an HTTP request would get."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        body = envelope(refused.code, refused.message)
        await websocket.send_denial_response(JSONResponse(body, status_code=status_for(refused)))
    else:
        await websocket.close(code=POLICY_VIOLATION, reason=refused.code)


class ChatSocket:
    """One accepted socket: reads frames, runs one turn at a time, writes frames one at a
    time."""

    def __init__(
        self, websocket: WebSocket, credential: str, principal: Principal, connection_id: str
    ) -> None:
        self.websocket = websocket
        self.credential = credential
        self.principal = principal
        self.connection_id = connection_id
        app = websocket.app
        self.peers: Peers = app.state.peers
        self.settings: Settings = app.state.settings
        self.guardrails: Guardrails = app.state.guardrails
        self.turns = 0
        self.turn: asyncio.Task[None] | None = None
        # The running turn's conversation and answer, once accepted; a cancel asked for
        # before then is sent when it is.
        self.answer: tuple[str, str] | None = None
        self.cancel_asked = False
        self.writing = asyncio.Lock()
        self.closed = False

    async def serve(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                await self.frame(message.get("text"))
        except WebSocketDisconnect:
            return
        finally:
            self.closed = True
            if self.turn is not None and not self.turn.done():
                # As a client leaving an SSE stream: the chain is cancelled down to the
                # provider, and the answer stored cancelled.
                self.turn.cancel()
                await asyncio.gather(self.turn, return_exceptions=True)

    async def frame(self, text: str | None) -> None:
        """Serve one frame from the client."""
        if text is None:
            await self.error(None, InvalidArgument("send JSON text frames", code="invalid_frame"))
            return
        if len(text) > self.settings.max_body_bytes:
            limit = self.settings.max_body_bytes
            await self.error(
                None, InvalidArgument(f"a frame is at most {limit} bytes", code="frame_too_large")
            )
            return
        try:
            frame = FRAME.validate_json(text)
        except ValidationError as invalid:
            await self.error(_ref_of(text), _invalid(invalid))
            return
        if isinstance(frame, PingFrame):
            await self.write({"type": "pong", "ref": frame.ref})
        elif isinstance(frame, CancelFrame):
            await self.cancel(frame)
        elif self.turn is not None and not self.turn.done():
            await self.error(
                frame.ref,
                FailedPrecondition(
                    "an answer is streaming on this socket; cancel it or wait for its end",
                    code="turn_running",
                ),
            )
        else:
            self.turns += 1
            self.answer, self.cancel_asked = None, False
            self.turn = asyncio.create_task(self.run(frame))

    async def cancel(self, frame: CancelFrame) -> None:
        if self.turn is None or self.turn.done():
            await self.error(
                frame.ref,
                FailedPrecondition("no answer is streaming on this socket", code="no_turn_running"),
            )
            return
        self.cancel_asked = True
        if self.answer is not None:
            await self._stop(*self.answer)

    async def _stop(self, conversation_id: str, answer_id: str) -> None:
        """Ask conversation to stop the answer; the turn's stream then ends with its
        ``error`` ``cancelled``."""
        try:
            await self.peers.conversation.CancelAnswer(
                conv.CancelAnswerRequest(conversation_id=conversation_id, message_id=answer_id)
            )
        except Exception as failed:  # the turn goes on; say so
            await self.error(None, _as_error(failed))

    async def run(self, frame: SendFrame | RegenerateFrame) -> None:
        """One turn: its checks, then its events."""
        request_id_var.set(f"{self.connection_id}.{self.turns}")
        try:
            await self._run(frame)
        except asyncio.CancelledError:
            raise
        except Exception as failed:
            await self.error(frame.ref, _as_error(failed))

    async def _run(self, frame: SendFrame | RegenerateFrame) -> None:
        try:
            # Checked again before each turn: a socket must not outlive its credential.
            self.principal = await _principal(self.websocket, self.credential)
        except (Unauthenticated, PermissionDenied) as refused:
            await self.error(frame.ref, refused)
            await self.websocket.close(code=POLICY_VIOLATION, reason=refused.code)
            return
        principal = self.principal
        await check_rate(self.websocket, principal, "chat")
        timeout = self.settings.stream_timeout_seconds
        if isinstance(frame, SendFrame):
            content = frame.content
            if not content.strip():
                raise InvalidArgument("content: must not be empty", code="empty_message")
            if len(content) > self.settings.max_message_chars:
                raise InvalidArgument(
                    f"content: at most {self.settings.max_message_chars} characters",
                    code="message_too_long",
                )
            content = await self.guardrails.check_input(principal.tenant_id, content)
            lease = await admit_turn(self.websocket, principal)
            call = lease.watch(
                self.peers.conversation.SendMessage(
                    conv.SendMessageRequest(
                        conversation_id=frame.conversation_id,
                        content=content,
                        idempotency_key=frame.idempotency_key or "",
                        model=frame.model or "",
                        usage_with_done=True,
                    ),
                    timeout=timeout,
                )
            )
        else:
            lease = await admit_turn(self.websocket, principal)
            call = lease.watch(
                self.peers.conversation.RegenerateMessage(
                    conv.RegenerateMessageRequest(
                        conversation_id=frame.conversation_id,
                        model=frame.model or "",
                        usage_with_done=True,
                    ),
                    timeout=timeout,
                )
            )
        guard = self.guardrails.answer(principal.tenant_id)
        first = await _first_event(call)
        ids = TurnEncoder()
        async for name, data in _turn_events(call, first, _pair, guard):
            event_id = ids.event_id(name, data)
            await self.write({"type": name, "ref": frame.ref, "id": event_id, **data})
            if name == "accepted":
                self.answer = (frame.conversation_id, data["assistant_message_id"])
                if self.cancel_asked:
                    await self._stop(*self.answer)

    async def error(self, ref: str | None, error: ParleyError) -> None:
        """A ``rejected`` frame for a frame that could not be served."""
        frame: dict[str, Any] = {
            "type": "rejected",
            "ref": ref,
            "code": error.code,
            "message": error.message,
            "status": status_for(error),
            "retryable": error.retryable,
            "request_id": request_id_var.get(),
        }
        if error.retry_after is not None:
            frame["retry_after"] = error.retry_after
        await self.write(frame)

    async def write(self, frame: dict[str, Any]) -> None:
        if self.closed:
            return
        async with self.writing:
            try:
                await self.websocket.send_text(_json(frame))
            except (WebSocketDisconnect, RuntimeError):
                self.closed = True  # the client has gone; the reader ends the session


def _as_error(failed: Exception) -> ParleyError:
    """What a client is told of a failure: a peer's error as it reported it, anything else as
    an internal error (logged here, with its stack)."""
    if isinstance(failed, ParleyError):
        return failed
    if isinstance(failed, grpc.RpcError):
        return from_rpc_error(failed)
    log.error("unhandled error on a chat socket", exc_info=failed)
    return Internal("internal error")


def _invalid(error: ValidationError) -> InvalidArgument:
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item.get("loc", ()))
        if item.get("type") == "json_invalid":
            problems.append("the frame is not valid JSON")
        else:
            problems.append(f"{path or 'frame'}: {item.get('msg', 'invalid')}")
    return InvalidArgument("; ".join(problems), code="invalid_request")


def _ref_of(text: str) -> str | None:
    """The ``ref`` of a frame that failed validation, when it has a usable one."""
    try:
        found = json.loads(text)
    except ValueError:
        return None
    ref = found.get("ref") if isinstance(found, dict) else None
    return ref if isinstance(ref, str) and len(ref) <= 128 and ref.isprintable() else None

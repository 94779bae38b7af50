"""Server-Sent Events: each event encoded once and written as one body chunk.

A streamed turn sends a few dozen small events; what each one costs on the way out is most of
the gateway's share of a turn. :func:`encode` renders an event straight to its bytes, and
:class:`EventStream` writes each as one ``http.response.body`` message from the request's own
task, the last one with the end of the body. Beside it runs one watcher per stream: it waits
for the client to leave (then cancels the stream, and with it whatever the events were waiting
for: a turn's gRPC call), and sends a comment when the stream has been quiet for
``keep_alive`` seconds, so that proxies keep the connection open.

The events of a turn carry an ``id:`` (:class:`TurnEncoder`): the answer's message id and the
event's position in the stream, ``<assistant_message_id>:<n>``. A client that lost the
connection sends the last one back as ``Last-Event-ID`` to read the stored answer instead
(``answers.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger("parley.gateway")

# Compact and ASCII-escaped: the JSON of an event never holds a line break, so one ``data:``
# line carries it whole. One encoder for every event (``json.dumps`` with options builds one
# per call); the data is built fresh by views.py, so it has no cycles to look for.
_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode

KEEP_ALIVE = b": keep-alive\r\n\r\n"
# The events that end a turn's stream; exactly one of them ends every turn.
TURN_END = frozenset(("done", "error"))


def encode(name: str, data: Mapping[str, Any], event_id: str | None = None) -> bytes:
    """The bytes of one event: its id when it has one, its name and its data as one line of
    JSON."""
    if event_id is None:
        return f"event: {name}\r\ndata: {_json(data)}\r\n\r\n".encode()
    return f"id: {event_id}\r\nevent: {name}\r\ndata: {_json(data)}\r\n\r\n".encode()


class TurnEncoder:
    """Encodes the events of one turn's stream, each with the ``id`` ``<answer>:<n>``: the
    assistant message's id (from ``accepted``, or given when the stream reads a stored answer)
    and the event's position, from ``first``. Events before the answer has an id have none."""

    __slots__ = ("answer_id", "position")

    def __init__(self, answer_id: str = "", first: int = 0) -> None:
        self.answer_id = answer_id
        self.position = first

    def event_id(self, name: str, data: Mapping[str, Any]) -> str | None:
        """The id of the next event, ``name`` with ``data``."""
        if name == "accepted":
            self.answer_id = str(data.get("assistant_message_id") or "")
        if not self.answer_id:
            return None
        event_id = f"{self.answer_id}:{self.position}"
        self.position += 1
        return event_id

    def __call__(self, name: str, data: Mapping[str, Any]) -> tuple[bytes, bool]:
        """The bytes of the event, and whether it ends the stream."""
        return encode(name, data, self.event_id(name, data)), name in TURN_END


class EventStream(Response):
    """A ``text/event-stream`` response of encoded events, one body chunk each.

    ``events`` yields each event's bytes and whether it is the last: that one goes out with
    the end of the body (one write less), and the stream stops there. When the client
    disconnects, the stream stops where it waits: ``events`` is closed there, so its cleanup
    runs at once, and nothing more is written. A comment goes out whenever nothing was
    written for ``keep_alive`` seconds.
    """

    media_type = "text/event-stream"

    def __init__(
        self, events: AsyncGenerator[tuple[bytes, bool], None], *, keep_alive: float
    ) -> None:
        # Not Response.__init__, which would render a body and announce its length.
        self.status_code = 200
        self.background = None
        self.init_headers(
            {
                "Cache-Control": "no-store",
                "Connection": "keep-alive",
                # nginx and similar proxies would otherwise buffer the stream.
                "X-Accel-Buffering": "no",
            }
        )
        self.events = events
        self.keep_alive = keep_alive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.current_task()
        assert stream is not None
        loop = asyncio.get_running_loop()
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        last_write = loop.time()
        client_left = False

        async def watch() -> None:
            nonlocal last_write, client_left
            try:
                while True:
                    deadline = last_write + self.keep_alive
                    if loop.time() >= deadline:
                        await send(
                            {"type": "http.response.body", "body": KEEP_ALIVE, "more_body": True}
                        )
                        last_write = loop.time()
                        continue
                    try:
                        async with asyncio.timeout_at(deadline):
                            message = await receive()
                    except TimeoutError:
                        continue
                    if message["type"] == "http.disconnect":
                        client_left = True
                        stream.cancel()
                        return
            except Exception:
                # Nobody awaits this task: say what went wrong rather than lose it.
                log.exception("the watcher of a streamed response failed")

        watcher = loop.create_task(watch())
        end = b""
        try:
            async with aclosing(self.events):
                async for chunk, last in self.events:
                    if last:
                        end = chunk
                        break
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    last_write = loop.time()
        except asyncio.CancelledError:
            # Cancelled by the watcher alone: the client has gone, and nobody is left to answer.
            if client_left and stream.uncancel() == 0:
                return
            raise
        finally:
            watcher.cancel()
        await send({"type": "http.response.body", "body": end, "more_body": False})

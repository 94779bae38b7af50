"""ASGI middleware: request id, trace context, access metrics and the last-resort answer for
every HTTP request, and the count of streams in flight.

Plain ASGI rather than ``BaseHTTPMiddleware`` so streamed responses pass through untouched.

While tracing, the server span of a request is OpenTelemetry's FastAPI instrumentation's
(``app.py``), named by the route's template; this middleware makes one itself only when that
instrumentation is left off (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=fastapi``), or, while
tracing is off, passes a caller's trace context on to the next hop.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley_gateway.errors import envelope
from parley_gateway.turns import RECEIVED_AT
from parley_runtime import telemetry
from parley_runtime.context import request_id_var

log = logging.getLogger("parley.gateway")
_tracer = trace.get_tracer("parley.gateway.http")

HTTP_REQUESTS = Counter(
    "parley_http_requests_total", "HTTP requests by route and status.", ["route", "status"]
)
HTTP_DURATION = Histogram(
    "parley_http_request_duration_seconds",
    "From request to response headers.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STREAMS_IN_FLIGHT = Gauge(
    "parley_gateway_streams_in_flight",
    "Streams open to clients, by transport: SSE responses, WebSocket connections.",
    ["transport"],
)
_SSE_STREAMS = STREAMS_IN_FLIGHT.labels("sse")
_WEBSOCKETS = STREAMS_IN_FLIGHT.labels("websocket")
_EVENT_STREAM = b"text/event-stream"


# What a client's request id may be: it is echoed in a header, sent to every peer in gRPC
# metadata (printable ASCII only) and written to logs.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestContextMiddleware:
    """Sets the request id (``X-Request-ID`` in and out) and the server span, and answers
    whatever escapes the app.

    A client's ``X-Request-ID`` is kept when it matches :data:`REQUEST_ID`; anything else is
    replaced by a fresh id, with a warning. The last resort: an exception no handler took
    becomes a 500 envelope with the request id (nothing of the exception), or, once the
    response has started, is logged and ends it; it never reaches the server, which would
    drop the connection.
    """

    def __init__(self, app: ASGIApp, server_span: bool = True) -> None:
        self.app = app
        # False when the FastAPI instrumentation makes the server span.
        self.server_span = server_span

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            _WEBSOCKETS.inc()
            try:
                await self.app(scope, receive, send)
            finally:
                _WEBSOCKETS.dec()
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope.setdefault("state", {})[RECEIVED_AT] = started
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id")
        if incoming is not None and REQUEST_ID.fullmatch(incoming):
            request_id = incoming
        else:
            request_id = uuid.uuid4().hex
        token = request_id_var.set(request_id)
        if incoming is not None and request_id != incoming:
            log.warning(
                "X-Request-ID replaced: it must be 1 to 128 of A-Z a-z 0-9 . _ : -",
                extra={"refused_request_id": incoming[:200]},
            )
        span: trace.Span = trace.INVALID_SPAN
        otel_token = None
        if self.server_span:
            span = _tracer.start_span(
                f"{scope['method']} {scope['path']}",
                context=telemetry.extract(headers),
                kind=trace.SpanKind.SERVER,
                attributes={"http.request.method": scope["method"], "url.path": scope["path"]},
            )
            otel_token = otel_context.attach(trace.set_span_in_context(span))
        status: dict[str, Any] = {}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                for key, value in message.get("headers", ()):
                    if key.lower() == b"content-type" and value.startswith(_EVENT_STREAM):
                        status["streaming"] = True
                        _SSE_STREAMS.inc()
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
                route = scope.get("route")
                label = getattr(route, "path", "unmatched")
                HTTP_REQUESTS.labels(label, str(message["status"])).inc()
                HTTP_DURATION.labels(label).observe(
                    time.perf_counter() - started, telemetry.exemplar()
                )
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error")
            if "code" not in status:
                answer = JSONResponse(envelope("internal", "internal error"), status_code=500)
                await answer(scope, receive, send_with_id)
        finally:
            if status.get("streaming"):
                _SSE_STREAMS.dec()
            code = status.get("code", 500)
            if otel_token is not None:
                span.set_attribute("http.response.status_code", code)
                if code >= 500:
                    span.set_status(trace.StatusCode.ERROR)
                span.end()
                otel_context.detach(otel_token)
            request_id_var.reset(token)

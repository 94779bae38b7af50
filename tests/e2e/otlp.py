"""An OTLP/gRPC trace receiver on loopback that keeps every span it is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as ts_grpc


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    # Each event's name and attributes, in order.
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    # OTLP's span kind (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    kind: int = 0
    # Each link's trace id and span id.
    links: tuple[tuple[str, str], ...] = ()
    # When it started and ended, in nanoseconds since the epoch.
    start_ns: int = 0
    end_ns: int = 0


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(values: Any) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in values}


@dataclass
class SpanSink(ts_grpc.TraceServiceServicer):
    spans: list[ReceivedSpan] = field(default_factory=list)

    async def Export(
        self, request: ts.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> ts.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            events=tuple(
                                (event.name, _attributes(event.attributes)) for event in span.events
                            ),
                            kind=span.kind,
                            links=tuple(
                                (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                            ),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                        )
                    )
        return ts.ExportTraceServiceResponse()

    def services_in_trace(self, trace_id: str) -> set[str]:
        return {s.service for s in self.spans if s.trace_id == trace_id}


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[str, SpanSink]]:
    """Yield the endpoint (``http://127.0.0.1:port``) and the sink collecting spans."""
    sink = SpanSink()
    server = grpc.aio.server()
    ts_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"http://127.0.0.1:{port}", sink
    finally:
        await server.stop(0)

"""OpenTelemetry tracing, set up once per process.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans are batched and exported over OTLP/gRPC; without
it no SDK is installed and tracing costs next to nothing, while incoming W3C trace context
still passes through to the next hop. Context crosses processes as ``traceparent`` in HTTP
headers and gRPC metadata (see :func:`inject` and :func:`extract`).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

_provider: TracerProvider | None = None


def setup_tracing(
    service: str, endpoint: str | None, sampler_ratio: float = 1.0
) -> TracerProvider | None:
    """Install the SDK with an OTLP exporter when an endpoint is given; return the provider."""
    global _provider
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "parley"}),
        sampler=ParentBased(TraceIdRatioBased(sampler_ratio)),
    )
    insecure = endpoint.startswith("http://") or "://" not in endpoint
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=insecure)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    """Flush and stop the exporter; spans of the last requests are not lost on exit."""
    if _provider is not None:
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject(carrier: MutableMapping[str, str]) -> None:
    """Write the current trace context into outgoing headers or metadata."""
    propagate.inject(carrier)


def extract(carrier: Mapping[str, str]) -> otel_context.Context:
    """Read the trace context of incoming headers or metadata."""
    return propagate.extract(carrier)

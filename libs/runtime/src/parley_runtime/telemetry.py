"""OpenTelemetry tracing, set up once per process.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans are batched and exported over OTLP/gRPC; without
it no SDK is installed and tracing costs next to nothing, while incoming W3C trace context
still passes through to the next hop. Context crosses processes as ``traceparent`` in HTTP
headers and gRPC metadata (see :func:`inject` and :func:`extract`), and is stored with work
that outlives its request (an ingest job keeps its upload's, :func:`traceparent` and
:func:`links`).

What is traced, and by what:

- the gRPC hops: hand-written spans in ``grpc_server`` and ``grpc_client`` (OpenTelemetry's
  gRPC instrumentation doubled a hop's latency);
- the libraries' own work, through OpenTelemetry's instrumentations, each installed by the
  service that uses the library and only while tracing (:func:`instrumented`): FastAPI (the
  gateway's server spans), SQLAlchemy (every statement, ``db``), Redis (limits, cache,
  breakers), the aiohttp client (providers' HTTP calls). ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``
  leaves some off (``fastapi,redis``...);
- the work in between, hand-written with :func:`span`: a search in the vector store, an
  embedding batch, a prompt's build, a token count, a model call with OpenTelemetry's GenAI
  attributes. None is made while tracing is off.

Latency histograms carry the trace id of a sampled span as an exemplar (:func:`exemplar`), so
a slow bucket in Grafana opens its trace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.util.types import Attributes

# The instrumentations a service may install, by the names OpenTelemetry gives them.
INSTRUMENTATIONS = ("fastapi", "sqlalchemy", "redis", "aiohttp-client")

_provider: TracerProvider | None = None
_disabled: frozenset[str] = frozenset()


def setup_tracing(
    service: str, endpoint: str | None, sampler_ratio: float = 1.0, disabled: str = ""
) -> TracerProvider | None:
    """Install the SDK with an OTLP exporter when an endpoint is given; return the provider.

    ``disabled`` names instrumentations to leave off (comma-separated, see
    :data:`INSTRUMENTATIONS`)."""
    global _provider, _disabled
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
    _disabled = frozenset(name.strip() for name in disabled.split(",") if name.strip())
    return provider


def shutdown_tracing() -> None:
    """Flush and stop the exporter; spans of the last requests are not lost on exit."""
    if _provider is not None:
        _provider.shutdown()


def tracing() -> bool:
    """Whether this process records spans (an SDK is installed)."""
    return _provider is not None


def instrumented(name: str) -> bool:
    """Whether the library instrumentation ``name`` should be installed: tracing is on and
    it is not disabled."""
    return _provider is not None and name not in _disabled


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


@contextmanager
def span(
    tracer: trace.Tracer,
    name: str,
    attributes: Attributes = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    links: Sequence[trace.Link] = (),
) -> Iterator[trace.Span]:
    """A hand-written span, current while the block runs (an error ends it with its status);
    while tracing is off, no span at all."""
    if _provider is None:
        yield trace.INVALID_SPAN
        return
    with tracer.start_as_current_span(
        name, kind=kind, attributes=attributes, links=links
    ) as current:
        yield current


@contextmanager
def untraced() -> Iterator[None]:
    """No spans from the libraries' instrumentations inside: for background polling (a
    readiness check, a sweep), whose trace every few seconds would bury the requests'."""
    if _provider is None:
        yield
        return
    token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        yield
    finally:
        otel_context.detach(token)


def exemplar(current: trace.Span | None = None) -> dict[str, str] | None:
    """The exemplar of an observation made in ``current`` (default: the current span): its
    trace id when the span is sampled, else None."""
    if _provider is None:
        return None
    context = (current or trace.get_current_span()).get_span_context()
    if not context.trace_flags.sampled:
        return None
    return {"trace_id": format(context.trace_id, "032x")}


def traceparent() -> str | None:
    """The current span's W3C ``traceparent`` (to store with work done later), or None."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def links(stored_traceparent: str | None) -> list[trace.Link]:
    """A link to the span a stored ``traceparent`` names (none when it names none)."""
    if not stored_traceparent:
        return []
    context = trace.get_current_span(
        propagate.extract({"traceparent": stored_traceparent})
    ).get_span_context()
    return [trace.Link(context)] if context.is_valid else []


def inject(carrier: MutableMapping[str, str]) -> None:
    """Write the current trace context into outgoing headers or metadata."""
    propagate.inject(carrier)


def extract(carrier: Mapping[str, str]) -> otel_context.Context:
    """Read the trace context of incoming headers or metadata."""
    return propagate.extract(carrier)

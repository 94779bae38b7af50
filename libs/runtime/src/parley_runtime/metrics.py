"""Prometheus metrics every gRPC service exposes, those of Redis's users, and the /metrics
endpoint (OpenMetrics when the scraper asks for it, with the exemplars of the latency
histograms)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_HANDLED = Counter(
    "parley_grpc_server_handled_total",
    "RPCs completed by this server, by method and status code.",
    ["method", "code"],
)
RPC_DURATION = Histogram(
    "parley_grpc_server_handling_seconds",
    "Time from receiving an RPC to its last response message.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

RPC_IN_FLIGHT = Gauge(
    "parley_grpc_server_in_flight",
    "RPCs and streams being served, by method: the per-pod autoscaling signal.",
    ["method"],
)
REDIS_ERRORS = Counter(
    "parley_redis_errors_total",
    "Redis calls that failed and were worked around, by component (limits, cache, breaker).",
    ["component"],
)


def redis_errors(components: Iterable[str]) -> dict[str, Counter]:
    """The error counters of a service's Redis components, each exported from the start."""
    return {component: REDIS_ERRORS.labels(component) for component in components}


def serve_metrics(host: str, port: int) -> None:
    """Expose /metrics on its own port (a thread); port 0 means none."""
    if port:
        start_http_server(port, addr=host)

"""Prometheus metrics every gRPC service exposes, and the /metrics endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

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


def serve_metrics(host: str, port: int) -> None:
    """Expose /metrics on its own port (a thread); port 0 means none."""
    if port:
        start_http_server(port, addr=host)

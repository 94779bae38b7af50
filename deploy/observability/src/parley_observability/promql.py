"""What the dashboards and rules share: selectors of the metric catalogue, the SLOs, and the
metrics that come from Kubernetes rather than from Parley's processes.

Every query names series that the services export (their names are listed in
``deploy/observability/README.md``, "Metrics"); a test evaluates each one against a real
Prometheus scraping the five services.
"""

from __future__ import annotations

import re

SERVICES = ("gateway", "conversation", "llm-router", "retrieval", "ingest")

# The routes that start a chat turn (the route label is the path template). WebSocket turns
# have no HTTP status: they count through the gateway's turn histogram alone.
CHAT_ROUTES = r"/v1/conversations/[^/]+/(messages|regenerate)|/openai/v1/chat/completions"
# gRPC codes that are the server's fault (the others are the caller's, or a cancel).
GRPC_SERVER_ERRORS = "UNKNOWN|DEADLINE_EXCEEDED|UNIMPLEMENTED|INTERNAL|UNAVAILABLE|DATA_LOSS"
LLM_CALLS = "/parley.llm_router.v1.LlmRouter/(Chat|StreamChat)"

# Objectives, over 30 days.
AVAILABILITY_OBJECTIVE = 0.999
TTFT_OBJECTIVE = 0.99
# A turn whose first text reaches the client later than this is slow. prometheus_client writes
# the bucket bound as "5.0"; both spellings are matched.
TTFT_THRESHOLD_SECONDS = 5
TTFT_BUCKET = 'le=~"5|5.0"'

# kube-state-metrics series: a cluster has them, Parley's processes never do. The loopback
# Prometheus test checks that queries on them parse, not that they return series.
KUBERNETES_METRICS = (
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_pod_container_status_restarts_total",
    "kube_pod_container_status_waiting_reason",
)
# Parley's containers are named after their services.
CONTAINERS = f'container=~"{"|".join(SERVICES)}"'

_METRIC_NAME = re.compile(r"\b(parley[_:][a-zA-Z0-9_:]+|kube_[a-z0-9_]+)")


def metric_names(expr: str) -> set[str]:
    """The catalogue, recording-rule and Kubernetes metric names an expression reads."""
    return set(_METRIC_NAME.findall(expr))


def on_kubernetes_only(expr: str) -> bool:
    """Whether the expression reads only what kube-state-metrics exports."""
    names = metric_names(expr)
    return bool(names) and names <= set(KUBERNETES_METRICS)


def or_zero(expr: str, base: str) -> str:
    """``expr``, or 0 for each series of ``base`` it lacks: a counter child that never moved
    (no 5xx yet, no failed job) reads 0 instead of leaving a ratio with no series."""
    return f"({expr} or 0 * {base})"


def quantile(q: float, histogram: str, by: str = "", selector: str = "", window: str = "") -> str:
    """The ``q`` quantile of a histogram, per ``by`` labels."""
    labels = f"{by}, le" if by else "le"
    window = window or "$__rate_interval"
    series = f"{histogram}_bucket{{{selector}}}" if selector else f"{histogram}_bucket"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({series}[{window}])))"


def ratio_of(part: str, whole: str, by: str = "", window: str = "$__rate_interval") -> str:
    """The share of ``whole``'s rate that ``part`` (a narrower selector) is, per ``by``;
    0 where ``part`` has no series yet."""
    grouping = f" by ({by})" if by else ""
    numerator = f"sum{grouping} (rate({part}[{window}]))"
    denominator = f"sum{grouping} (rate({whole}[{window}]))"
    return f"{or_zero(numerator, denominator)} / {denominator}"

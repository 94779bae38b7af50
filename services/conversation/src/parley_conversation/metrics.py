"""Every Prometheus series of conversation (the runtime adds those of its gRPC server)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TURNS = Counter("parley_turns_total", "Chat turns by outcome.", ["outcome"])
FIRST_DELTA = Histogram(
    "parley_turn_first_delta_seconds",
    "From the stored user message to the first answer text.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)

"""Every Prometheus series of conversation (the runtime adds those of its gRPC server)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TURNS = Counter("parley_turns_total", "Chat turns by outcome.", ["outcome"])
FIRST_DELTA = Histogram(
    "parley_turn_first_delta_seconds",
    "From the stored user message to the first answer text.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
TURN_DURATION = Histogram(
    "parley_turn_duration_seconds",
    "From the stored user message to the stored answer, by outcome (complete, failed, cancelled).",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
for _outcome in ("complete", "failed", "cancelled"):  # exported from the start, at zero
    TURN_DURATION.labels(_outcome)
TOOL_CALLS = Counter(
    "parley_tool_calls_total",
    "Tool calls run for the model, by tool and outcome (ok, or the error code).",
    ["tool", "outcome"],
)
TOOL_SECONDS = Histogram(
    "parley_tool_seconds",
    "How long a tool call ran.",
    ["tool"],
    buckets=(0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BACKGROUND_TASKS = Counter(
    "parley_background_tasks_total",
    "Background tasks (summary, title, memory) by how a run ended: done, retried, failed "
    "(tries ran out) or dropped (their conversation is gone).",
    ["kind", "outcome"],
)
QUERY_REWRITES = Counter(
    "parley_query_rewrites_total",
    "Follow-ups made standalone before retrieval, by outcome: rewritten, joined (the "
    "offline local model: recent questions joined), or kept (the message as written, after "
    "a failure or a timeout).",
    ["outcome"],
)
PROMPT_COUNTS = Counter(
    "parley_prompt_token_counts_total",
    "Prompts counted by llm-router's CountTokens because their bound passed the budget.",
)

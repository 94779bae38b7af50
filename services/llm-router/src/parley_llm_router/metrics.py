"""Every Prometheus series of llm-router (the runtime adds the per-RPC ones).

Candidates are labelled ``provider/model``; tokens and cost also by tenant (an operator's
list, bounded, never a user). :class:`CandidateMeters` holds one candidate's labelled
children and :class:`TenantMeters` one candidate's for one tenant, looked up once rather than
on every request.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from parley_llm_router.breaker import BreakerState

REQUESTS = Counter(
    "parley_llm_requests_total",
    "Provider attempts by candidate and outcome.",
    ["candidate", "outcome"],
)
RETRIES = Counter("parley_llm_retries_total", "Retries of the same candidate.", ["candidate"])
FALLBACKS = Counter("parley_llm_fallbacks_total", "Moves to the next candidate.", ["alias"])
TIME_TO_FIRST_TOKEN = Histogram(
    "parley_llm_time_to_first_token_seconds",
    "From the provider call to its first delta.",
    ["candidate"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
TOKENS_PER_SECOND = Histogram(
    "parley_llm_output_tokens_per_second",
    "Output tokens per second of streaming, after the first token.",
    ["candidate"],
    buckets=(5, 10, 20, 40, 80, 160, 320, 640),
)
TOKENS = Counter(
    "parley_llm_tokens_total",
    "Tokens by candidate, direction (input, output) and tenant.",
    ["candidate", "direction", "tenant"],
)
COST = Counter(
    "parley_llm_cost_usd_total",
    "Cost in US dollars by candidate and tenant.",
    ["candidate", "tenant"],
)
CACHE = Counter("parley_llm_cache_total", "Response cache lookups by result.", ["result"])
IN_FLIGHT = Gauge("parley_llm_in_flight", "Calls in flight per candidate.", ["candidate"])
BREAKER = Gauge(
    "parley_llm_breaker_state",
    "Circuit state per candidate: 0 closed, 1 half open, 2 open.",
    ["candidate"],
)
BREAKER_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True, slots=True)
class CandidateMeters:
    """One candidate's labelled series, looked up once: a ``labels()`` lookup costs more
    than the count it labels, and an answered request touches nine of them."""

    ok: Counter
    in_flight: Gauge
    time_to_first_token: Histogram
    tokens_per_second: Histogram
    breaker: Gauge

    @classmethod
    def of(cls, label: str) -> CandidateMeters:
        return cls(
            ok=REQUESTS.labels(label, "ok"),
            in_flight=IN_FLIGHT.labels(label),
            time_to_first_token=TIME_TO_FIRST_TOKEN.labels(label),
            tokens_per_second=TOKENS_PER_SECOND.labels(label),
            breaker=BREAKER.labels(label),
        )


@dataclass(frozen=True, slots=True)
class TenantMeters:
    """What one tenant's answers from one candidate used: tokens and cost."""

    tokens_in: Counter
    tokens_out: Counter
    cost: Counter

    @classmethod
    def of(cls, label: str, tenant: str) -> TenantMeters:
        return cls(
            tokens_in=TOKENS.labels(label, "input", tenant),
            tokens_out=TOKENS.labels(label, "output", tenant),
            cost=COST.labels(label, tenant),
        )

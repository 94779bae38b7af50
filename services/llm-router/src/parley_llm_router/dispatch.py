"""Streaming a request through a route: candidates in order, fallback before the first token.

Before a candidate has produced anything, a failure or a first-token timeout moves on to the
next candidate; when none is left the call fails with UNAVAILABLE (or the most telling code)
and a retry hint. After the first token the answer belongs to that candidate: a failure ends
the stream with a :class:`Failed` event that carries the partial usage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from parley_llm_router.messages import ChatRequest, Finish, ProviderEvent, TextDelta, Usage
from parley_llm_router.providers.base import (
    FailureKind,
    Provider,
    ProviderFailure,
    Timeouts,
)
from parley_llm_router.routing import Candidate, Route
from parley_llm_router.tokens import estimate_messages, estimate_text
from parley_runtime.context import remaining_seconds
from parley_runtime.errors import FailedPrecondition, ParleyError, Unavailable

log = logging.getLogger("parley.llm_router")

REQUESTS = Counter(
    "parley_llm_requests_total", "Model calls by candidate and outcome.", ["candidate", "outcome"]
)
FALLBACKS = Counter("parley_llm_fallbacks_total", "Moves to the next candidate.", ["alias"])
TIME_TO_FIRST_TOKEN = Histogram(
    "parley_llm_time_to_first_token_seconds",
    "From the provider call to its first delta.",
    ["candidate"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)


@dataclass(frozen=True, slots=True)
class Started:
    """The candidate that answers; emitted with its first delta."""

    candidate: Candidate
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Failed:
    """The stream broke after it started."""

    code: str
    message: str
    retryable: bool
    partial_usage: Usage


RouterEvent = Started | ProviderEvent | Failed


def _attempt_timeouts(timeouts: Timeouts) -> Timeouts:
    """Cap the per-attempt limits by what is left of the caller's deadline."""
    remaining = remaining_seconds()
    if remaining is None:
        return timeouts
    remaining = max(remaining, 0.001)
    return Timeouts(
        connect=min(timeouts.connect, remaining),
        first_token=min(timeouts.first_token, remaining),
        total=min(timeouts.total, remaining),
    )


def _exhausted(route: Route, failures: list[ProviderFailure]) -> ParleyError:
    """The error for a route whose every candidate failed before its first token."""
    if failures and all(f.kind == FailureKind.AUTH for f in failures):
        return FailedPrecondition(
            "the model provider rejected the configured credentials", code=FailureKind.AUTH
        )
    if failures and all(f.kind == FailureKind.BAD_REQUEST for f in failures):
        return FailedPrecondition(
            "the model provider rejected the request", code=FailureKind.BAD_REQUEST
        )
    last = failures[-1] if failures else None
    hints = [f.retry_after for f in failures if f.retry_after is not None]
    return Unavailable(
        f"no provider for model {route.alias!r} could answer"
        + (f" ({last.message})" if last else ""),
        code=last.kind.value if last else FailureKind.UNAVAILABLE.value,
        retry_after=max(hints) if hints else 1.0,
    )


async def dispatch(
    route: Route,
    request: ChatRequest,
    providers: Mapping[str, Provider],
    timeouts: Timeouts,
) -> AsyncIterator[RouterEvent]:
    """Yield ``Started``, the deltas and one ``Finish`` or ``Failed`` (see module docstring)."""
    failures: list[ProviderFailure] = []
    limits = _attempt_timeouts(timeouts)
    for index, candidate in enumerate(route.candidates):
        if index:
            FALLBACKS.labels(route.alias).inc()
        provider = providers[candidate.provider]
        events = aiter(provider.stream(candidate.model, request, limits))
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limits.first_token):
                first = await anext(events)
        except ProviderFailure as failure:
            failures.append(failure)
        except TimeoutError:
            failures.append(
                ProviderFailure(FailureKind.TIMEOUT, "the provider sent no first token in time")
            )
        else:
            TIME_TO_FIRST_TOKEN.labels(candidate.label).observe(time.perf_counter() - started)
            async for event in _relay(candidate, request, first, events, limits, started):
                yield event
            return
        await events.aclose()  # type: ignore[attr-defined]
        REQUESTS.labels(candidate.label, failures[-1].kind.value).inc()
        log.warning(
            "candidate failed before its first token",
            extra={"candidate": candidate.label, "failure": failures[-1].kind.value},
        )
    raise _exhausted(route, failures)


async def _relay(
    candidate: Candidate,
    request: ChatRequest,
    first: ProviderEvent,
    events: AsyncIterator[ProviderEvent],
    limits: Timeouts,
    started: float,
) -> AsyncIterator[RouterEvent]:
    yield Started(candidate)
    yield first
    produced: list[str] = [first.text] if isinstance(first, TextDelta) else []
    if isinstance(first, Finish):
        REQUESTS.labels(candidate.label, "ok").inc()
        return
    remaining = max(limits.total - (time.perf_counter() - started), 0.001)
    try:
        async with asyncio.timeout(remaining):
            async for event in events:
                if isinstance(event, TextDelta):
                    produced.append(event.text)
                yield event
    except (ProviderFailure, TimeoutError) as error:
        failure = (
            error
            if isinstance(error, ProviderFailure)
            else ProviderFailure(FailureKind.TIMEOUT, "the provider's answer took too long")
        )
        REQUESTS.labels(candidate.label, failure.kind.value).inc()
        yield Failed(
            code=failure.kind.value,
            message=failure.message,
            retryable=failure.retryable,
            partial_usage=Usage(
                input_tokens=estimate_messages(request.messages, request.tools),
                output_tokens=estimate_text("".join(produced)),
                estimated=True,
            ),
        )
        return
    REQUESTS.labels(candidate.label, "ok").inc()

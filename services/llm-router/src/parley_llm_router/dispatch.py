"""Answering one request through its route: the heart of the router.

The :class:`Dispatcher` holds what outlives a reload of the routes (breakers, bulkheads,
latencies, the cache and the ledger) and answers with the :class:`~.engine.Engine` a request
began with, billing the principal it is given.

For a request the dispatcher
1. replays a cached answer when the request is cacheable and one is stored;
2. orders the route's candidates (priority, weighted or latency) and, for each in turn,
   takes a slot of its bulkhead (queueing at most its queue timeout), asks its circuit
   breaker for admission, and calls the provider with connect and first-token timeouts;
3. before the first token, retries a retryable failure on the same candidate with backoff
   and full jitter (honouring ``Retry-After``, never past the caller's deadline), then falls
   back to the next candidate; an authentication failure is never retried;
4. after the first token, the answer belongs to that candidate: the between-token and total
   timeouts apply, and a failure ends the stream with :class:`Failed` and partial usage;
5. completes usage (counted when the provider reported none), prices it, records it in the
   ledger and stores cacheable answers.

Each attempt is a span with OpenTelemetry's GenAI attributes (``gen_ai.*``: provider, request
and response model, token usage, finish reasons) and a ``first_token`` event; each retry and
each fallback is an event (``retry``, ``fallback``: the candidate and the reason) on the span
of the request (llm-router's ``StreamChat`` or ``Chat``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from opentelemetry import trace

from parley_llm_router import embeddings
from parley_llm_router.breaker import Admission, Breakers
from parley_llm_router.cache import CachedAnswer, ResponseCache, cache_key, cacheable
from parley_llm_router.embeddings import Embedded, EmbeddingModel
from parley_llm_router.engine import Engine
from parley_llm_router.ledger import UsageEntry, UsageLedger
from parley_llm_router.messages import (
    ChatRequest,
    Finish,
    ProviderEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from parley_llm_router.metrics import (
    BREAKER_VALUE,
    CACHE,
    FALLBACKS,
    REQUESTS,
    RETRIES,
    CandidateMeters,
    TenantMeters,
)
from parley_llm_router.providers.base import Timeouts
from parley_llm_router.providers.failures import (
    FailureKind,
    ProviderFailure,
    reported,
    retryable,
)
from parley_llm_router.resilience import Bulkhead, RetryPolicy, Saturated, Watchdog
from parley_llm_router.routing import Candidate, LatencyTracker, Route, order
from parley_llm_router.tokens import TokenCounter
from parley_runtime import telemetry
from parley_runtime.context import Principal, remaining_seconds
from parley_runtime.errors import ParleyError, Unavailable

log = logging.getLogger("parley.llm_router")
_tracer = trace.get_tracer("parley.llm_router")

# Tenants whose tokens and cost have their series looked up; beyond, looked up per answer.
MAX_TENANT_METERS = 10_000


@dataclass(frozen=True, slots=True)
class Started:
    """The candidate that answers; emitted with its first delta."""

    candidate: Candidate
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Failed:
    """The stream broke after it started."""

    kind: FailureKind
    message: str
    partial_usage: Usage

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed if sent again."""
        return retryable(self.kind)

    def error(self) -> ParleyError:
        """The error a caller that wanted the whole answer at once receives."""
        return reported(self.kind, self.message)


RouterEvent = Started | ProviderEvent | Failed


@dataclass
class Dispatcher:
    """State that outlives a routes reload: breakers, bulkheads, latencies, cache, ledger."""

    breakers: Breakers
    cache: ResponseCache
    ledger: UsageLedger
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    latency: LatencyTracker = field(default_factory=LatencyTracker)
    bulkheads: dict[tuple[str, int], Bulkhead] = field(default_factory=dict)
    meters: dict[str, CandidateMeters] = field(default_factory=dict)
    tenant_meters: dict[tuple[str, str], TenantMeters] = field(default_factory=dict)

    def _meters(self, candidate: Candidate) -> CandidateMeters:
        meters = self.meters.get(candidate.label)
        if meters is None:
            meters = self.meters[candidate.label] = CandidateMeters.of(candidate.label)
        return meters

    def _tenant_meters(self, candidate: Candidate, tenant: str) -> TenantMeters:
        key = (candidate.label, tenant)
        meters = self.tenant_meters.get(key)
        if meters is None:
            meters = TenantMeters.of(candidate.label, tenant)
            if len(self.tenant_meters) < MAX_TENANT_METERS:
                self.tenant_meters[key] = meters
        return meters

    def _bulkhead(self, candidate: Candidate) -> Bulkhead:
        key = (candidate.label, candidate.max_concurrency)
        bulkhead = self.bulkheads.get(key)
        if bulkhead is None:
            bulkhead = self.bulkheads[key] = Bulkhead(candidate.max_concurrency)
        return bulkhead

    async def stream(
        self,
        engine: Engine,
        route: Route,
        request: ChatRequest,
        cache_mode: str,
        principal: Principal,
    ) -> AsyncIterator[RouterEvent]:
        """Yield ``Started``, deltas, and one ``Finish`` or ``Failed``; raise if nothing
        could start (see the module docstring). ``principal`` scopes the cache and is billed
        in the ledger."""
        key = None
        if cacheable(request, cache_mode):
            key = cache_key(principal.tenant_id, route.alias, request)
            hit = await self.cache.get(key)
            CACHE.labels("hit" if hit else "miss").inc()
            if hit is not None:
                async for event in _replay(hit, route):
                    yield event
                self._record(
                    principal, route, hit.provider, hit.model, hit.usage, cached=True, outcome="ok"
                )
                return

        failures: list[ProviderFailure] = []
        tried: Candidate | None = None
        for candidate in order(route, self.latency.averages):
            if tried is not None:
                FALLBACKS.labels(route.alias).inc()
                trace.get_current_span().add_event(
                    "fallback",
                    {
                        "parley.candidate": candidate.label,
                        "parley.previous_candidate": tried.label,
                        "error.type": failures[-1].kind.value if failures else "unknown",
                    },
                )
            tried = candidate
            bulkhead = self._bulkhead(candidate)
            try:
                await bulkhead.acquire(candidate.queue_timeout)
            except Saturated:
                failures.append(
                    ProviderFailure(FailureKind.UNAVAILABLE, "every slot of the model was busy")
                )
                REQUESTS.labels(candidate.label, "saturated").inc()
                continue
            meters = self._meters(candidate)
            meters.in_flight.inc()
            try:
                admission = await self.breakers.admit(candidate.label)
                if admission == Admission.REJECT:
                    failures.append(
                        ProviderFailure(FailureKind.UNAVAILABLE, "the model's circuit is open")
                    )
                    REQUESTS.labels(candidate.label, "circuit_open").inc()
                    continue
                outcome = _Outcome(keep_answer=key is not None)
                async for event in self._candidate(
                    engine, route, candidate, request, principal, outcome
                ):
                    yield event
                if outcome.failure is None:
                    if key is not None and outcome.answer is not None:
                        await self.cache.put(key, outcome.answer)
                    return
                failures.append(outcome.failure)
            finally:
                meters.in_flight.dec()
                bulkhead.release()
        raise _exhausted(route, failures)

    async def embed(
        self, engine: Engine, model: EmbeddingModel, inputs: list[str], principal: Principal
    ) -> Embedded:
        """Vectors for ``inputs`` through the model's provider (or the local model), billed
        to ``principal`` in the ledger."""
        result = await embeddings.embed(model, engine.providers.get(model.provider), inputs)
        self.ledger.record(
            UsageEntry(
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                alias=model.alias,
                provider=model.provider,
                model=result.model,
                input_tokens=result.input_tokens,
                output_tokens=0,
                cost_usd=result.cost_usd,
                cached=False,
                outcome="ok",
            )
        )
        return result

    async def _candidate(
        self,
        engine: Engine,
        route: Route,
        candidate: Candidate,
        request: ChatRequest,
        principal: Principal,
        outcome: _Outcome,
    ) -> AsyncIterator[RouterEvent]:
        """Attempts on one candidate; sets ``outcome.failure`` when it could not start."""
        provider = engine.providers[candidate.provider]
        for attempt in range(1, candidate.max_attempts + 1):
            limits = _capped(candidate.timeouts)
            span = _tracer.start_span(
                f"chat {candidate.model}",
                kind=trace.SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": candidate.provider,
                    "gen_ai.provider.name": candidate.provider,
                    "gen_ai.request.model": candidate.model,
                    "parley.model_alias": route.alias,
                    "parley.attempt": attempt,
                },
            )
            events = aiter(provider.stream(candidate.model, request, limits))
            # The provider's stream is closed here however the attempt ends: at its finish
            # (one step before its end), on a failure, or when the caller leaves. Dropped
            # unfinished, the event loop's finalizer hook would close it in a task of its
            # own, with a thread-safe wake-up of the loop, on every request.
            try:
                with trace.use_span(span, end_on_exit=True):
                    started = time.perf_counter()
                    try:
                        async with asyncio.timeout(limits.first_token):
                            first = await anext(events)
                    except (ProviderFailure, TimeoutError) as error:
                        failure = _as_failure(error, "the provider sent no first token in time")
                        span.set_status(trace.StatusCode.ERROR, failure.kind.value)
                        span.set_attribute("error.type", failure.kind.value)
                    else:
                        outcome.failure = None  # an earlier attempt's failure no longer counts
                        ttft = time.perf_counter() - started
                        span.add_event("first_token")
                        self._meters(candidate).time_to_first_token.observe(
                            ttft, telemetry.exemplar(span)
                        )
                        self.latency.observe(candidate.label, ttft)
                        await self._health(candidate, ok=True)
                        async for event in self._relay(
                            engine,
                            route,
                            candidate,
                            request,
                            principal,
                            first,
                            events,
                            limits,
                            started,
                            span,
                            outcome,
                        ):
                            yield event
                        return
            finally:
                await events.aclose()  # type: ignore[attr-defined]
            REQUESTS.labels(candidate.label, failure.kind.value).inc()
            if failure.retryable:  # a rejected key or request says nothing of its health
                await self._health(candidate, ok=False)
            outcome.failure = failure
            wait = self.retry.wait_before_retry(
                failure, attempt, candidate.max_attempts, remaining_seconds()
            )
            log.warning(
                "candidate failed before its first token",
                extra={
                    "candidate": candidate.label,
                    "failure": failure.kind.value,
                    "attempt": attempt,
                    "retry_in": wait,
                },
            )
            if wait is None:
                return
            RETRIES.labels(candidate.label).inc()
            trace.get_current_span().add_event(
                "retry",
                {
                    "parley.candidate": candidate.label,
                    "parley.attempt": attempt + 1,
                    "error.type": failure.kind.value,
                },
            )
            await asyncio.sleep(wait)
            if (await self.breakers.admit(candidate.label)) == Admission.REJECT:
                return

    async def _relay(
        self,
        engine: Engine,
        route: Route,
        candidate: Candidate,
        request: ChatRequest,
        principal: Principal,
        first: ProviderEvent,
        events: AsyncIterator[ProviderEvent],
        limits: Timeouts,
        started: float,
        span: trace.Span,
        outcome: _Outcome,
    ) -> AsyncIterator[RouterEvent]:
        counter = engine.counters[candidate.provider]
        text: list[str] = []
        calls: list[ToolCallDelta] = []
        first_at = time.perf_counter()
        yield Started(candidate)
        event: ProviderEvent | None = first
        loop = asyncio.get_running_loop()
        watchdog = Watchdog(limits.between_tokens, loop.time() + started + limits.total - first_at)
        try:
            while event is not None:
                if isinstance(event, Finish):
                    usage = _complete_usage(event.usage, counter, request, "".join(text))
                    usage.cost_usd = candidate.cost(usage.input_tokens, usage.output_tokens)
                    self._observe(candidate, principal, usage, time.perf_counter() - first_at, span)
                    span.set_attribute("gen_ai.response.finish_reasons", [event.reason.value])
                    self._record(
                        principal,
                        route,
                        candidate.provider,
                        candidate.model,
                        usage,
                        cached=False,
                        outcome="ok",
                    )
                    if outcome.keep_answer:
                        outcome.answer = CachedAnswer(
                            candidate.provider,
                            candidate.model,
                            "".join(text),
                            tuple(calls),
                            event.reason,
                            usage,
                        )
                    yield Finish(event.reason, usage)
                    return
                if isinstance(event, TextDelta):
                    text.append(event.text)
                elif isinstance(event, ToolCallDelta):
                    calls.append(event)
                yield event
                watchdog.waiting()
                try:
                    event = await anext(events, None)
                except asyncio.CancelledError:
                    if not watchdog.expired():
                        raise
                    raise TimeoutError from None
                watchdog.received()
            raise ProviderFailure(FailureKind.STREAM_BROKEN, "the provider's stream ended early")
        except (ProviderFailure, TimeoutError) as error:
            failure = _as_failure(error, "the provider stopped sending tokens in time")
            await events.aclose()  # type: ignore[attr-defined]
            REQUESTS.labels(candidate.label, failure.kind.value).inc()
            await self._health(candidate, ok=False)
            span.set_status(trace.StatusCode.ERROR, failure.kind.value)
            partial = _complete_usage(Usage(), counter, request, "".join(text))
            partial.cost_usd = candidate.cost(partial.input_tokens, partial.output_tokens)
            self._record(
                principal,
                route,
                candidate.provider,
                candidate.model,
                partial,
                cached=False,
                outcome=failure.kind.value,
            )
            yield Failed(failure.kind, failure.message, partial)
        finally:
            watchdog.close()

    async def _health(self, candidate: Candidate, *, ok: bool) -> None:
        state = await self.breakers.record(candidate.label, ok)
        self._meters(candidate).breaker.set(BREAKER_VALUE[state])

    def _observe(
        self,
        candidate: Candidate,
        principal: Principal,
        usage: Usage,
        streaming: float,
        span: trace.Span,
    ) -> None:
        meters = self._meters(candidate)
        meters.ok.inc()
        used = self._tenant_meters(candidate, principal.tenant_id)
        used.tokens_in.inc(usage.input_tokens)
        used.tokens_out.inc(usage.output_tokens)
        used.cost.inc(usage.cost_usd)
        if streaming > 0 and usage.output_tokens > 1:
            meters.tokens_per_second.observe(usage.output_tokens / streaming)
        span.set_attribute("gen_ai.response.model", candidate.model)
        span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)

    def _record(
        self,
        principal: Principal,
        route: Route,
        provider: str,
        model: str,
        usage: Usage,
        *,
        cached: bool,
        outcome: str,
    ) -> None:
        self.ledger.record(
            UsageEntry(
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                alias=route.alias,
                provider=provider,
                model=model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=0.0 if cached else usage.cost_usd,
                cached=cached,
                outcome=outcome,
            )
        )


@dataclass
class _Outcome:
    keep_answer: bool = False  # the request is cacheable: gather its answer
    failure: ProviderFailure | None = None
    answer: CachedAnswer | None = None


async def _replay(hit: CachedAnswer, route: Route) -> AsyncIterator[RouterEvent]:
    candidate = next(
        (c for c in route.candidates if (c.provider, c.model) == (hit.provider, hit.model)),
        Candidate(hit.provider, hit.model),
    )
    yield Started(candidate, cached=True)
    if hit.text:
        yield TextDelta(hit.text)
    for call in hit.tool_calls:
        yield call
    yield Finish(hit.finish_reason, Usage(hit.usage.input_tokens, hit.usage.output_tokens, 0.0))


def _as_failure(error: BaseException, timeout_message: str) -> ProviderFailure:
    if isinstance(error, ProviderFailure):
        return error
    return ProviderFailure(FailureKind.TIMEOUT, timeout_message)


def _complete_usage(
    usage: Usage, counter: TokenCounter, request: ChatRequest, output: str
) -> Usage:
    """The provider's usage, or a count where it reported none."""
    if usage.input_tokens or usage.output_tokens:
        return Usage(usage.input_tokens, usage.output_tokens, usage.cost_usd, usage.estimated)
    with telemetry.span(_tracer, "count tokens", {"parley.messages": len(request.messages)}):
        input_tokens, _ = counter.count_messages(request.messages, request.tools)
        output_tokens, _ = counter.count_text(output)
    return Usage(input_tokens, output_tokens, 0.0, estimated=True)


def _capped(timeouts: Timeouts) -> Timeouts:
    """Cap the per-attempt limits by what is left of the caller's deadline."""
    remaining = remaining_seconds()
    if remaining is None:
        return timeouts
    remaining = max(remaining, 0.001)
    return Timeouts(
        connect=min(timeouts.connect, remaining),
        first_token=min(timeouts.first_token, remaining),
        total=min(timeouts.total, remaining),
        between_tokens=min(timeouts.between_tokens, remaining),
    )


# What the caller reads when every candidate refused the request the same way.
_REFUSED = {
    FailureKind.AUTH: "the model provider rejected the configured credentials",
    FailureKind.BAD_REQUEST: "the model provider rejected the request",
}


def _exhausted(route: Route, failures: list[ProviderFailure]) -> ParleyError:
    """The error for a route whose every candidate failed before its first token: the
    reported error of their one kind when it is not worth retrying (see
    :mod:`.providers.failures`), otherwise UNAVAILABLE, as another try may find a candidate
    that answers."""
    last = failures[-1] if failures else None
    if last is not None and not last.retryable and all(f.kind == last.kind for f in failures):
        return reported(last.kind, _REFUSED.get(last.kind, last.message))
    hints = [f.retry_after for f in failures if f.retry_after is not None]
    return Unavailable(
        f"no provider for model {route.alias!r} could answer"
        + (f" ({last.message})" if last else ""),
        code=last.kind.value if last else FailureKind.UNAVAILABLE.value,
        retry_after=max(hints) if hints else 1.0,
    )


__all__ = ["Dispatcher", "Failed", "RouterEvent", "Started"]

"""The decisions: may this request go, may this turn start, and what a caller has left.

:class:`Limiter` turns a caller (tenant, user, the API key it used if any) and a route class
into store keys and meters once (then cached), asks the store in one round trip, and answers
with a :class:`Standing` (what the ``RateLimit-*`` headers say) or raises :class:`LimitReached`
(a 429). A turn that may start gets a :class:`TurnLease`: its stream slot, given back when the
turn's call ends however it ends, and its tokens, counted then from the turn's ``usage`` event.

When the store fails, ``LIMITS_ON_REDIS_ERROR`` decides: ``open`` lets the request go without
limits (counted in ``parley_gateway_limit_decisions_total`` and logged), ``closed`` answers 503
``limits_unavailable``.
"""

from __future__ import annotations

import asyncio
import calendar
import functools
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import grpc
from prometheus_client import Counter

from parley.common.v1.common_pb2 import Usage
from parley.conversation.v1 import conversation_pb2 as conv
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley_gateway.limits.gcra import MICROS, Meter, Tally
from parley_gateway.limits.policy import (
    ROUTE_CLASSES,
    Period,
    Policy,
    Rate,
    RouteClass,
    Subject,
    Tier,
)
from parley_gateway.limits.store import LimitStore, StoreUnavailable
from parley_gateway.turns import TurnMeter
from parley_runtime.context import Principal
from parley_runtime.errors import ResourceExhausted, Unavailable

log = logging.getLogger("parley.gateway.limits")

LIMIT_DECISIONS = Counter(
    "parley_gateway_limit_decisions_total",
    "Limit checks by kind (rate, turn) and outcome (allowed, refused, store_error).",
    ["kind", "outcome"],
)
TOKENS_COUNTED = Counter("parley_gateway_tokens_counted_total", "Tokens counted against quotas.")

SUBJECTS: tuple[Subject, ...] = ("api_key", "user", "tenant")
SUBJECTS_SAID = {"api_key": "API key", "user": "user", "tenant": "tenant"}
PERIODS: tuple[Period, ...] = ("day", "month")
UsageOf = Callable[[Any], Usage | None]
# How long a turn's call that nobody reads holds its stream slot after it is done.
UNREAD_GRACE_SECONDS = 1.0
# Every plan of a replica's recent callers; the cache starts over when it passes this.
_PLANS_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class Standing:
    """Where the binding limit stands: what the ``RateLimit-*`` headers of a response say.

    ``limit`` is the most that may go at once, ``remaining`` what may go now, ``reset`` the
    seconds until the limit is whole again; ``policy`` lists every limit that applied
    (``RateLimit-Policy``, draft-ietf-httpapi-ratelimit-headers-06).
    """

    limit: int
    remaining: int
    reset: int
    policy: str

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset).encode()),
            (b"ratelimit-policy", self.policy.encode()),
        ]


class LimitReached(ResourceExhausted):
    """429: a rate, a quota or the streams a caller may hold; ``standing`` gives the headers,
    ``retry_after`` the ``Retry-After``."""

    def __init__(self, message: str, *, code: str, retry_after: float, standing: Standing) -> None:
        super().__init__(message, code=code, retry_after=retry_after)
        self.standing = standing


def _seconds(micros: int) -> int:
    return -(-micros // MICROS)  # rounded up: a client waiting this long is never early


def _policy_item(rate: Rate, name: str) -> str:
    item = f"{rate.count};w={rate.period_seconds:g}"
    if rate.burst != rate.count:
        item += f";burst={rate.burst}"
    return f'{item};name="{name}"'


@dataclass(frozen=True, slots=True)
class _RatePlan:
    """The keys and meters of one caller's requests of one route class."""

    keys: tuple[str, ...]
    meters: tuple[Meter, ...]
    rates: tuple[Rate, ...]
    subjects: tuple[str, ...]
    policy: str


@dataclass(frozen=True, slots=True)
class _TurnPlan:
    """The token counters (and their quotas) and stream sets (and their limits) of a caller."""

    tier: Tier
    tag: str
    user: str
    streams: tuple[tuple[str, int, str], ...]  # key, limit, name
    quotas: tuple[tuple[str, Period, int, str], ...]  # subject key, period, quota, name


def _meter(rate: Rate) -> Meter:
    return Meter(interval=max(1, round(rate.interval * MICROS)), burst=rate.burst)


def _period(period: Period, now: float) -> tuple[str, float, float]:
    """The label of the UTC day or month holding ``now``, its start and its end (Unix)."""
    return _period_of_day(period, int(now // 86_400))


@functools.lru_cache(maxsize=64)
def _period_of_day(period: Period, day_number: int) -> tuple[str, float, float]:
    day = datetime.fromtimestamp(day_number * 86_400, UTC)
    if period == "day":
        start = float(day_number * 86_400)
        return day.strftime("%Y%m%d"), start, start + 86_400.0
    start = float(calendar.timegm((day.year, day.month, 1, 0, 0, 0)))
    days = calendar.monthrange(day.year, day.month)[1]
    return day.strftime("%Y%m"), start, start + days * 86_400.0


def turn_usage(event: conv.TurnEvent) -> Usage | None:
    """The usage a conversation turn event reports: the ``usage`` event's, or the ``done``
    that carries it (``usage_with_done``). A replayed turn has none: it used nothing."""
    kind = event.WhichOneof("event")
    if kind == "usage":
        return event.usage.usage
    if kind == "done" and event.done.HasField("usage"):
        return event.done.usage
    return None


def chat_usage(event: llm.ChatEvent) -> Usage | None:
    """The usage a llm-router stream event reports: its finish's, or its failure's partial."""
    kind = event.WhichOneof("event")
    if kind == "finish":
        return event.finish.usage
    if kind == "error":
        return event.error.partial_usage
    return None


class TurnLease:
    """A turn that was let start: its stream slot and the tokens it uses.

    :meth:`watch` wraps the turn's streamed gRPC call: the usage is read as it passes, and the
    lease ends (slot given back, tokens counted, once, in the background) when the stream is
    read to its end, fails, or is cancelled, as a turn's reader always does last. Should
    nobody read the call at all (gRPC then holds it open until its deadline), the lease ends
    :data:`UNREAD_GRACE_SECONDS` after the call is done.
    A unary call is not watched: ``try: reply = await call; lease.use(reply.usage) finally:
    lease.end()``. A watched call is timed by the lease's ``meter`` when it has one.
    """

    __slots__ = ("_ended", "_limiter", "counters", "meter", "slot", "slot_keys", "tokens")

    def __init__(
        self,
        limiter: Limiter,
        slot: str,
        slot_keys: tuple[str, ...],
        counters: tuple[tuple[str, float], ...],
    ) -> None:
        self._limiter = limiter
        self.slot = slot
        self.slot_keys = slot_keys
        self.counters = counters
        self.tokens = 0
        self._ended = False
        self.meter: TurnMeter | None = None

    def watch(self, call: Any, usage_of: UsageOf = turn_usage) -> Any:
        """``call``, a streamed gRPC call of the turn (conversation's ``SendMessage`` by
        default; llm-router's ``StreamChat`` with :func:`chat_usage`), watched: pass it on in
        its place."""
        loop = asyncio.get_running_loop()
        # The safety net of a call nobody reads to its end; a grace, so that a reader finishing
        # its last events (the usage) always ends the lease first.
        call.add_done_callback(lambda _: loop.call_later(UNREAD_GRACE_SECONDS, self.end))
        return WatchedCall(call, self, usage_of, self.meter)

    def use(self, usage: Usage) -> None:
        """The turn's usage as reported (the last report counts: each is the whole turn's)."""
        self.tokens = usage.input_tokens + usage.output_tokens

    def end(self) -> None:
        """Give the slot back and count the tokens (once; what follows is a no-op)."""
        if self._ended:
            return
        self._ended = True
        self._limiter.spawn(self._limiter.settle(self))


class WatchedCall:
    """A streamed call whose usage its lease reads on the way, and whose end (read to the
    end, failed, cancelled) ends the lease; every other attribute is the call's own."""

    __slots__ = ("_call", "_events", "_lease", "_meter", "_usage_of")

    def __init__(
        self, call: Any, lease: TurnLease, usage_of: UsageOf, meter: TurnMeter | None = None
    ) -> None:
        self._call = call
        self._lease = lease
        self._usage_of = usage_of
        self._meter = meter
        self._events = call.__aiter__()

    def __aiter__(self) -> WatchedCall:
        return self

    async def __anext__(self) -> Any:
        try:
            event = await self._events.__anext__()
        except BaseException as error:  # the end of the stream, its failure or cancellation
            self._lease.end()
            if self._meter is not None:
                cancelled = isinstance(error, asyncio.CancelledError) or (
                    isinstance(error, grpc.aio.AioRpcError)
                    and error.code() == grpc.StatusCode.CANCELLED
                )
                self._meter.end("cancelled" if cancelled else "failed")
            raise
        usage = self._usage_of(event)
        if usage is not None:
            self._lease.use(usage)
        if self._meter is not None:
            self._meter.seen(event)
        return event

    def cancel(self) -> bool:
        cancelled: bool = self._call.cancel()
        self._end()
        return cancelled

    def close(self, *, read_to_end: bool) -> None:
        """Done with the call on this side. A call whose last event was read is left to
        close with the status that follows it (cancelling it would cost both sides a
        cancellation for nothing, and could cut short the peer's work after its last
        event); any other is cancelled, down to the provider."""
        if read_to_end:
            self._end()
        else:
            self.cancel()

    def _end(self) -> None:
        self._lease.end()
        if self._meter is not None:
            self._meter.end("cancelled")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class Limiter:
    """Rates per route class, concurrent streams and token quotas of every caller (see the
    module docstring). One per process; ``store`` is shared by replicas or not."""

    def __init__(
        self,
        policy: Policy,
        store: LimitStore,
        *,
        fail_open: bool,
        stream_lease_seconds: float,
        prefix: str,
    ) -> None:
        self.policy = policy
        self.store = store
        self.fail_open = fail_open
        self.stream_lease_seconds = stream_lease_seconds
        self.prefix = prefix
        self._rate_plans: dict[tuple[str, str, str | None, RouteClass], _RatePlan | None] = {}
        self._turn_plans: dict[tuple[str, str], _TurnPlan] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned_at = 0.0

    # -- keys --------------------------------------------------------------------------------

    def _tag(self, tenant: str) -> str:
        # The tenant as a hash tag: a request's keys share a Redis Cluster slot. Quoted, so no
        # tenant's name can end the tag early or pose as another key's tail.
        return f"{self.prefix}{{{quote(tenant, safe='')}}}:"

    def _rate_plan(
        self, principal: Principal, api_key_id: str | None, route_class: RouteClass
    ) -> _RatePlan | None:
        cache_key = (principal.tenant_id, principal.user_id, api_key_id, route_class)
        if cache_key in self._rate_plans:
            return self._rate_plans[cache_key]
        _, tier = self.policy.tier_of(principal.tenant_id)
        rates = tier.rates(route_class)
        tag = self._tag(principal.tenant_id)
        ids = {"api_key": api_key_id, "user": principal.user_id, "tenant": ""}
        keys, meters, applied, subjects, items = [], [], [], [], []
        for subject in SUBJECTS:
            rate = rates.of(subject)
            who = ids[subject]
            if rate is None or who is None:
                continue
            keys.append(f"{tag}r:{route_class}:{subject[0]}:{who}")
            meters.append(_meter(rate))
            applied.append(rate)
            subjects.append(subject)
            items.append(_policy_item(rate, f"{route_class}.{subject}"))
        plan = (
            _RatePlan(tuple(keys), tuple(meters), tuple(applied), tuple(subjects), ", ".join(items))
            if keys
            else None
        )
        if len(self._rate_plans) >= _PLANS_KEPT:
            self._rate_plans.clear()
        self._rate_plans[cache_key] = plan
        return plan

    def _turn_plan(self, principal: Principal) -> _TurnPlan:
        cache_key = (principal.tenant_id, principal.user_id)
        plan = self._turn_plans.get(cache_key)
        if plan is not None:
            return plan
        _, tier = self.policy.tier_of(principal.tenant_id)
        tag = self._tag(principal.tenant_id)
        subjects = {"user": f"u:{principal.user_id}", "tenant": "t"}
        streams = []
        for subject, limit in (("user", tier.streams.user), ("tenant", tier.streams.tenant)):
            if limit is not None:
                streams.append((f"{tag}s:{subjects[subject]}", limit, f"streams.{subject}"))
        quotas = []
        for subject, quota in (("user", tier.tokens.user), ("tenant", tier.tokens.tenant)):
            for period in PERIODS:
                amount = quota.of(period)
                if amount is not None:
                    quotas.append((subjects[subject], period, amount, f"tokens.{subject}.{period}"))
        plan = _TurnPlan(tier, tag, principal.user_id, tuple(streams), tuple(quotas))
        if len(self._turn_plans) >= _PLANS_KEPT:
            self._turn_plans.clear()
        self._turn_plans[cache_key] = plan
        return plan

    def _counter(self, plan: _TurnPlan, subject_key: str, period: Period, now: float) -> str:
        label, _, _ = _period(period, now)
        return f"{plan.tag}q:{period[0]}{label}:{subject_key}"

    def _all_counters(self, plan: _TurnPlan, now: float) -> tuple[tuple[str, float], ...]:
        """Every token counter of the caller (also those without a quota, so that a quota
        set later starts from what was used), with when each may be dropped."""
        counters = []
        for subject_key in ("t", f"u:{plan.user}"):
            for period in PERIODS:
                _, _, end = _period(period, now)
                counters.append((self._counter(plan, subject_key, period, now), end + 3600.0))
        return tuple(counters)

    # -- decisions ---------------------------------------------------------------------------

    def _store_failed(self, kind: str, error: StoreUnavailable) -> None:
        LIMIT_DECISIONS.labels(kind, "store_error").inc()
        now = time.monotonic()
        if now - self._warned_at >= 30.0:
            self._warned_at = now
            verdict = "letting requests go" if self.fail_open else "refusing requests"
            log.warning(f"limits store unavailable; {verdict}", extra={"error": str(error)})
        if not self.fail_open:
            raise Unavailable(
                "limits cannot be checked right now", code="limits_unavailable", retry_after=1
            ) from None

    async def check(
        self, principal: Principal, api_key_id: str | None, route_class: RouteClass
    ) -> Standing | None:
        """One request of ``route_class``: its standing, or :class:`LimitReached`. None when
        nothing limits it (or the store failed and limits fail open)."""
        plan = self._rate_plan(principal, api_key_id, route_class)
        if plan is None:
            return None
        try:
            passed, tallies = await self.store.take(plan.keys, plan.meters)
        except StoreUnavailable as error:
            self._store_failed("rate", error)
            return None
        if passed:
            LIMIT_DECISIONS.labels("rate", "allowed").inc()
            # The headers show the limit nearest to refusing.
            binding = min(
                range(len(tallies)), key=lambda i: (tallies[i].remaining, -tallies[i].reset)
            )
            return self._standing(plan, binding, tallies[binding])
        LIMIT_DECISIONS.labels("rate", "refused").inc()
        binding = max(range(len(tallies)), key=lambda i: tallies[i].retry_after)
        tally = tallies[binding]
        retry = max(1, _seconds(tally.retry_after))
        raise LimitReached(
            f"too many {route_class} requests for this {SUBJECTS_SAID[plan.subjects[binding]]}: "
            f"{plan.rates[binding]}; retry in {retry} s",
            code="rate_limited",
            retry_after=retry,
            standing=self._standing(plan, binding, tally),
        )

    @staticmethod
    def _standing(plan: _RatePlan, index: int, tally: Tally) -> Standing:
        return Standing(
            limit=plan.rates[index].burst,
            remaining=tally.remaining,
            reset=_seconds(tally.reset),
            policy=plan.policy,
        )

    async def admit_turn(self, principal: Principal) -> TurnLease:
        """Let a turn start, or raise :class:`LimitReached`: ``quota_exceeded`` when a token
        quota of the caller is used up, ``too_many_streams`` when the caller (or its tenant)
        holds every stream it may."""
        plan = self._turn_plan(principal)
        now = time.time()
        counters = self._all_counters(plan, now)
        slot = uuid.uuid4().hex
        quotas = [
            (self._counter(plan, subject_key, period, now), amount)
            for subject_key, period, amount, _ in plan.quotas
        ]
        streams = [(key, limit) for key, limit, _ in plan.streams]
        try:
            refusal = await self.store.admit(quotas, streams, slot, self.stream_lease_seconds)
        except StoreUnavailable as error:
            self._store_failed("turn", error)
            return TurnLease(self, slot, (), counters)
        if refusal is None:
            LIMIT_DECISIONS.labels("turn", "allowed").inc()
            return TurnLease(self, slot, tuple(key for key, _ in streams), counters)
        LIMIT_DECISIONS.labels("turn", "refused").inc()
        if refusal.kind == "quota":
            _, period, amount, name = plan.quotas[refusal.index]
            _, start, end = _period(period, now)
            retry = max(1, int(end - now) + 1)
            who = "user" if name.startswith("tokens.user") else "tenant"
            raise LimitReached(
                f"the {who}'s token quota for this {period} ({amount} tokens) is used up",
                code="quota_exceeded",
                retry_after=retry,
                standing=Standing(
                    amount, 0, retry, f'{amount};w={round(end - start)};name="{name}"'
                ),
            )
        _, limit, name = plan.streams[refusal.index]
        who = "user" if name.endswith("user") else "tenant"
        raise LimitReached(
            f"the {who} has {limit} answers streaming already; wait for one to end",
            code="too_many_streams",
            retry_after=1,
            standing=Standing(limit, 0, 1, f'{limit};name="{name}"'),
        )

    async def settle(self, lease: TurnLease) -> None:
        """A turn has ended: its slot goes back, its tokens are counted (one round trip)."""
        try:
            await self.store.settle(lease.slot_keys, lease.slot, lease.counters, lease.tokens)
        except StoreUnavailable as error:
            log.warning(
                "a turn's end was not recorded: its stream slot ends with its lease, its "
                "tokens are not counted",
                extra={"error": str(error), "tokens": lease.tokens},
            )
            return
        if lease.tokens > 0:
            TOKENS_COUNTED.inc(lease.tokens)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background; :meth:`close` waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Finish what is settling (briefly), then let go of the store."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        await self.store.close()

    # -- what a caller has left --------------------------------------------------------------

    async def snapshot(self, principal: Principal, api_key_id: str | None) -> dict[str, Any]:
        """The caller's tier, rates, streams and token quotas, and where each stands; None
        for what is unlimited. Uses nothing."""
        tier_name, tier = self.policy.tier_of(principal.tenant_id)
        plan = self._turn_plan(principal)
        now = time.time()
        tag = plan.tag
        ids = {"api_key": api_key_id, "user": principal.user_id, "tenant": ""}
        rate_keys: list[str] = []
        meters: list[Meter] = []
        where: list[tuple[RouteClass, Subject, Rate]] = []
        for route_class in ROUTE_CLASSES:
            for subject in SUBJECTS:
                rate = tier.rates(route_class).of(subject)
                if rate is None or ids[subject] is None:
                    continue
                rate_keys.append(f"{tag}r:{route_class}:{subject[0]}:{ids[subject]}")
                meters.append(_meter(rate))
                where.append((route_class, subject, rate))
        stream_keys = [key for key, _, _ in plan.streams]
        counters = [key for key, _ in self._all_counters(plan, now)]
        try:
            tallies, open_now, used = await asyncio.gather(
                self.store.peek(rate_keys, meters),
                self.store.streams_open(stream_keys),
                self.store.tokens_used(counters),
            )
        except StoreUnavailable:
            raise Unavailable(
                "limits cannot be read right now", code="limits_unavailable", retry_after=1
            ) from None
        rates: dict[str, dict[str, Any]] = {
            c: {s: None for s in SUBJECTS if ids[s] is not None} for c in ROUTE_CLASSES
        }
        for (route_class, subject, rate), tally in zip(where, tallies, strict=True):
            rates[route_class][subject] = {
                "limit": rate.burst,
                "per_period": rate.count,
                "period_seconds": rate.period_seconds,
                "remaining": tally.remaining,
                "reset_seconds": _seconds(tally.reset),
            }
        held = dict(zip(stream_keys, open_now, strict=True))
        streams: dict[str, Any] = {"user": None, "tenant": None}
        for key, limit, name in plan.streams:
            streams[name.split(".")[1]] = {"limit": limit, "open": held[key]}
        counted = dict(zip(counters, used, strict=True))
        tokens: dict[str, dict[str, Any]] = {}
        for holder, holder_key, quota in (
            ("user", f"u:{principal.user_id}", tier.tokens.user),
            ("tenant", "t", tier.tokens.tenant),
        ):
            tokens[holder] = {}
            for period in PERIODS:
                _, _, end = _period(period, now)
                spent = counted[self._counter(plan, holder_key, period, now)]
                amount = quota.of(period)
                tokens[holder][period] = {
                    "limit": amount,
                    "used": spent,
                    "remaining": None if amount is None else max(0, amount - spent),
                    "resets_at": datetime.fromtimestamp(end, UTC)
                    .isoformat()
                    .replace("+00:00", "Z"),
                }
        return {"tier": tier_name, "rates": rates, "streams": streams, "tokens": tokens}

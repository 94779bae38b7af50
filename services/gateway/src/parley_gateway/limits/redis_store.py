"""The counters of limits in Redis, shared by every gateway replica.

Each step is one Lua script, one round trip, atomic however many replicas call at once. Time is
Redis's own (``TIME`` inside the scripts), so replicas agree whatever their clocks say. Keys
(named by ``limiter.py``) begin with the prefix and the tenant as a hash tag, so the keys of
one request share a cluster slot:

- a rate: a string, the GCRA's theoretical arrival time in microseconds (``gcra.py``), expiring
  when the limit is whole again;
- open streams: a sorted set of slot ids scored by their lease's end in milliseconds; expired
  leases are dropped before counting, so a gateway that died without releasing its slots
  gives them back when their lease ends;
- tokens: an integer counter per user or tenant and day or month, expiring after its period.

When Redis does not answer, the hot path does not wait on it again for a second: calls then
fail at once with :class:`StoreUnavailable` (``LIMITS_ON_REDIS_ERROR`` decides what follows).
Every failed call is counted in ``parley_redis_errors_total{component="limits"}``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from parley_gateway.limits.gcra import Meter, Tally
from parley_gateway.limits.store import Refusal, StoreUnavailable
from parley_runtime.metrics import REDIS_ERRORS

T = TypeVar("T")

# Mirrors gcra.take: every meter or none, on integer microseconds.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local current, after = {}, {}
local passed = 1
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = interval * tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil or tat < now then tat = now end
  current[i] = tat
  after[i] = tat + interval
  if after[i] - tolerance > now then passed = 0 end
end
local out = {passed}
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = interval * tonumber(ARGV[2 * i])
  if passed == 1 then
    local reset = after[i] - now
    redis.call('SET', KEYS[i], string.format('%.0f', after[i]), 'PX', math.ceil(reset / 1000) + 1)
    out[#out + 1] = math.floor((tolerance - reset) / interval)
    out[#out + 1] = reset
    out[#out + 1] = 0
  else
    local reset = current[i] - now
    out[#out + 1] = math.max(0, math.floor((tolerance - reset) / interval))
    out[#out + 1] = reset
    out[#out + 1] = math.max(0, after[i] - tolerance - now)
  end
end
return out
"""

_PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = interval * tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil or tat < now then tat = now end
  out[#out + 1] = math.max(0, math.floor((tolerance - (tat - now)) / interval))
  out[#out + 1] = tat - now
end
return out
"""

# KEYS: token counters, then stream sets. ARGV: how many counters, the slot, the lease in
# milliseconds, then each key's limit. Returns {0} or {1 quota | 2 streams, index, used}.
_ADMIT = """
local counters = tonumber(ARGV[1])
for i = 1, counters do
  local used = tonumber(redis.call('GET', KEYS[i])) or 0
  if used >= tonumber(ARGV[3 + i]) then return {1, i - 1, used} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = counters + 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local held = redis.call('ZCARD', KEYS[i])
  if held >= tonumber(ARGV[3 + i]) then return {2, i - counters - 1, held} end
end
local lease = tonumber(ARGV[3])
for i = counters + 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease, ARGV[2])
  redis.call('PEXPIRE', KEYS[i], lease)
end
return {0}
"""

_OPEN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('ZCOUNT', KEYS[i], string.format('(%d', now), '+inf')
end
return out
"""

# How long the hot path stops asking a Redis that failed to answer.
COOL_OFF_SECONDS = 1.0
TIMEOUT_SECONDS = 0.25


def connect(url: str) -> Redis:
    """A client for limits: short timeouts, and one retry (a pooled connection may be stale
    after Redis restarted), so a Redis in trouble costs a request little."""
    return Redis.from_url(
        url,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 1),
    )


class RedisStore:
    """:class:`~parley_gateway.limits.store.LimitStore` in Redis (see the module docstring)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._take = redis.register_script(_TAKE)
        self._peek = redis.register_script(_PEEK)
        self._admit = redis.register_script(_ADMIT)
        self._open = redis.register_script(_OPEN)
        self._quiet_until = 0.0
        self._errors = REDIS_ERRORS.labels("limits")  # exported from the start, at zero

    async def _hot(self, step: Callable[[], Awaitable[T]]) -> T:
        """``step``, unless Redis failed less than a second ago; a failure starts that second."""
        if time.monotonic() < self._quiet_until:
            raise StoreUnavailable("Redis failed a moment ago")
        try:
            return await step()
        except RedisError as error:
            self._errors.inc()
            self._quiet_until = time.monotonic() + COOL_OFF_SECONDS
            raise StoreUnavailable(type(error).__name__) from error

    async def _cold(self, step: Callable[[], Awaitable[T]]) -> T:
        try:
            return await step()
        except RedisError as error:
            self._errors.inc()
            raise StoreUnavailable(type(error).__name__) from error

    async def take(self, keys: Sequence[str], meters: Sequence[Meter]) -> tuple[bool, list[Tally]]:
        args = [value for m in meters for value in (m.interval, m.burst)]
        out: list[int] = await self._hot(lambda: self._take(keys=list(keys), args=args))
        tallies = [Tally(*out[i : i + 3]) for i in range(1, len(out), 3)]
        return out[0] == 1, tallies

    async def peek(self, keys: Sequence[str], meters: Sequence[Meter]) -> list[Tally]:
        args = [value for m in meters for value in (m.interval, m.burst)]
        out: list[int] = await self._cold(lambda: self._peek(keys=list(keys), args=args))
        return [Tally(out[i], out[i + 1], 0) for i in range(0, len(out), 2)]

    async def admit(
        self,
        quotas: Sequence[tuple[str, int]],
        streams: Sequence[tuple[str, int]],
        slot: str,
        lease_seconds: float,
    ) -> Refusal | None:
        if not quotas and not streams:
            return None
        keys = [key for key, _ in quotas] + [key for key, _ in streams]
        args: list[Any] = [len(quotas), slot, int(lease_seconds * 1000)]
        args += [limit for _, limit in quotas] + [limit for _, limit in streams]
        out: list[int] = await self._hot(lambda: self._admit(keys=keys, args=args))
        if out[0] == 0:
            return None
        return Refusal("quota" if out[0] == 1 else "streams", out[1], out[2])

    async def settle(
        self, keys: Sequence[str], slot: str, counters: Sequence[tuple[str, float]], tokens: int
    ) -> None:
        if not keys and (not counters or tokens <= 0):
            return

        async def end() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zrem(key, slot)
                if tokens > 0:
                    for key, until in counters:
                        pipe.incrby(key, tokens)
                        pipe.expireat(key, int(until))
                await pipe.execute()

        await self._cold(end)

    async def streams_open(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        out: list[int] = await self._cold(lambda: self._open(keys=list(keys)))
        return out

    async def tokens_used(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        values: list[Any] = await self._cold(lambda: self.redis.mget(list(keys)))
        return [int(v) if v is not None else 0 for v in values]

    async def close(self) -> None:
        await self.redis.aclose()

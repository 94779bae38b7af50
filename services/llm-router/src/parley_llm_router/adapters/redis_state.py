"""Circuit breakers and the response cache in Redis, shared by every router replica.

Breakers follow exactly the rules of :class:`parley_llm_router.breaker.Circuit`. Each
operation is one Lua script, so it is atomic however many replicas call at once: a failure is
never lost and only one probe passes a half-open circuit. Time is Redis's own clock
(``TIME`` inside the scripts), so replicas agree on cooldowns whatever their clocks say.
Keys, per candidate, share a hash tag (one cluster slot) and expire when idle:

- ``{prefix}{<candidate>}:state``: hash of ``state``, ``consecutive``, ``opened_at``,
  ``probe_started``;
- ``{prefix}{<candidate>}:w:<bucket>``: hash of ``ok`` and ``fail`` counts for one sixth of the
  window.

Redis being unreachable must not take the router down with it: breakers then fail open
(admit everything, report CLOSED) and the cache misses and skips writes, each with a warning
at most every 30 seconds; every such failure is counted in
``parley_redis_errors_total{component="breaker"|"cache"}``.
"""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from parley_llm_router.breaker import Admission, BreakerPolicy, BreakerState
from parley_llm_router.cache import CachedAnswer
from parley_runtime.metrics import REDIS_ERRORS

log = logging.getLogger("parley.llm_router.redis")

BUCKETS = 6

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cooldown, probe_timeout, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'probe_started')
local state = s[1] or 'closed'
if state == 'open' then
  if now - tonumber(s[2]) < cooldown then return 'reject' end
  state = 'half_open'
  redis.call('HSET', KEYS[1], 'state', 'half_open')
  redis.call('HDEL', KEYS[1], 'probe_started')
  s[3] = false
end
if state == 'half_open' then
  if s[3] and now - tonumber(s[3]) < probe_timeout then return 'reject' end
  redis.call('HSET', KEYS[1], 'probe_started', tostring(now))
  redis.call('EXPIRE', KEYS[1], ttl)
  return 'probe'
end
return 'allow'
"""

_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ok = ARGV[1] == '1'
local threshold, window, min_requests = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local error_rate, ttl, buckets = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local prefix = ARGV[8]
local width = window / buckets
local current = math.floor(now / width)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local function open()
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(now), 'consecutive', 0)
  redis.call('HDEL', KEYS[1], 'probe_started')
  redis.call('EXPIRE', KEYS[1], ttl)
  return 'open'
end
if state == 'half_open' then
  if ok then
    redis.call('DEL', KEYS[1])
    for b = current - buckets + 1, current do redis.call('DEL', prefix .. b) end
    return 'closed'
  end
  return open()
end
if state == 'open' then return 'open' end
local bucket = prefix .. current
redis.call('HINCRBY', bucket, ok and 'ok' or 'fail', 1)
redis.call('EXPIRE', bucket, math.ceil(window) + 1)
local consecutive = 0
if ok then
  redis.call('HSET', KEYS[1], 'consecutive', 0)
else
  consecutive = redis.call('HINCRBY', KEYS[1], 'consecutive', 1)
end
redis.call('EXPIRE', KEYS[1], ttl)
local good, bad = 0, 0
for b = current - buckets + 1, current do
  local counts = redis.call('HMGET', prefix .. b, 'ok', 'fail')
  good = good + (tonumber(counts[1]) or 0)
  bad = bad + (tonumber(counts[2]) or 0)
end
local total = good + bad
if consecutive >= threshold or (total >= min_requests and bad / total >= error_rate) then
  return open()
end
return 'closed'
"""

_STATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'state', 'opened_at')
local state = s[1] or 'closed'
if state == 'open' and now - tonumber(s[2]) >= tonumber(ARGV[1]) then return 'half_open' end
return state
"""


class _Warnings:
    """A component's Redis failures: each counted, one warning per ``every`` seconds at most."""

    def __init__(self, component: str, every: float = 30.0) -> None:
        self.errors = REDIS_ERRORS.labels(component)  # exported from the start, at zero
        self.every = every
        self.last = 0.0

    def warn(self, message: str, error: Exception) -> None:
        self.errors.inc()
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            log.warning(message, extra={"error": type(error).__name__})


class RedisBreakers:
    """Breakers shared through Redis (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        policy: BreakerPolicy | None = None,
        *,
        prefix: str = "parley:breaker:",
    ) -> None:
        self.redis = redis
        self.policy = policy or BreakerPolicy()
        self.prefix = prefix
        self._admit = redis.register_script(_ADMIT)
        self._record = redis.register_script(_RECORD)
        self._state = redis.register_script(_STATE)
        self._warnings = _Warnings("breaker")
        # Idle keys expire: well past any cooldown, window or probe timeout.
        self.ttl = int(
            max(self.policy.cooldown_seconds, self.policy.window_seconds,
                self.policy.probe_timeout_seconds) * 4 + 60
        )  # fmt: skip

    def _key(self, candidate: str) -> str:
        return f"{self.prefix}{{{candidate}}}:state"

    async def admit(self, key: str) -> Admission:
        p = self.policy
        try:
            answer = await self._admit(
                keys=[self._key(key)], args=[p.cooldown_seconds, p.probe_timeout_seconds, self.ttl]
            )
        except RedisError as error:
            self._warnings.warn("breaker state unavailable in Redis; admitting calls", error)
            return Admission.ALLOW
        return Admission(answer.decode() if isinstance(answer, bytes) else answer)

    async def record(self, key: str, ok: bool) -> BreakerState:
        p = self.policy
        try:
            answer = await self._record(
                keys=[self._key(key)],
                args=[
                    "1" if ok else "0",
                    p.consecutive_failures,
                    p.window_seconds,
                    p.min_requests,
                    p.error_rate,
                    self.ttl,
                    BUCKETS,
                    f"{self.prefix}{{{key}}}:w:",
                ],
            )
        except RedisError as error:
            self._warnings.warn("breaker state unavailable in Redis; not recorded", error)
            return BreakerState.CLOSED
        return BreakerState(answer.decode() if isinstance(answer, bytes) else answer)

    async def state(self, key: str) -> BreakerState:
        try:
            answer = await self._state(keys=[self._key(key)], args=[self.policy.cooldown_seconds])
        except RedisError as error:
            self._warnings.warn("breaker state unavailable in Redis", error)
            return BreakerState.CLOSED
        return BreakerState(answer.decode() if isinstance(answer, bytes) else answer)


class RedisCache:
    """The response cache in Redis, with a TTL; errors are misses, never failures."""

    def __init__(self, redis: Redis, ttl_seconds: float, *, prefix: str = "parley:cache:") -> None:
        self.redis = redis
        self.ttl = max(1, int(ttl_seconds))
        self.prefix = prefix
        self._warnings = _Warnings("cache")

    async def get(self, key: str) -> CachedAnswer | None:
        try:
            raw = await self.redis.get(self.prefix + key)
        except RedisError as error:
            self._warnings.warn("response cache unavailable in Redis; answering live", error)
            return None
        return None if raw is None else CachedAnswer.from_json(raw)

    async def put(self, key: str, answer: CachedAnswer) -> None:
        try:
            await self.redis.set(self.prefix + key, answer.to_json(), ex=self.ttl)
        except RedisError as error:
            self._warnings.warn("response cache unavailable in Redis; not stored", error)

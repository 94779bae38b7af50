"""Exact-match response cache, scoped by tenant.

A request is cached when it is deterministic (temperature 0 and no tools) or when the
caller asks (CACHE_MODE_PREFER), never with CACHE_MODE_BYPASS. The key hashes the tenant,
the alias and the whole canonical request, so tenants never share entries. Only complete
answers are stored; a cached answer streams back like a live one, marked ``cached``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Protocol

from parley_llm_router.messages import ChatRequest, FinishReason, ToolCallDelta, Usage


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A complete answer as stored, replayed like a live one."""

    provider: str
    model: str
    text: str
    tool_calls: tuple[ToolCallDelta, ...]
    finish_reason: FinishReason
    usage: Usage

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> CachedAnswer:
        data = json.loads(raw)
        return cls(
            provider=data["provider"],
            model=data["model"],
            text=data["text"],
            tool_calls=tuple(ToolCallDelta(**c) for c in data["tool_calls"]),
            finish_reason=FinishReason(data["finish_reason"]),
            usage=Usage(**data["usage"]),
        )


def cacheable(request: ChatRequest, mode: str) -> bool:
    """``mode`` is "default", "bypass" or "prefer" (the proto's CacheMode)."""
    if mode == "bypass":
        return False
    if mode == "prefer":
        return True
    return request.temperature == 0 and not request.tools


def cache_key(tenant_id: str, alias: str, request: ChatRequest) -> str:
    canonical = json.dumps(
        {"tenant": tenant_id, "alias": alias, "request": asdict(request)},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache(Protocol):
    """Where answers are kept: in this process, or shared through Redis."""

    async def get(self, key: str) -> CachedAnswer | None: ...

    async def put(self, key: str, answer: CachedAnswer) -> None: ...


class LocalCache:
    """In-process LRU with a TTL (the embedded default)."""

    def __init__(self, ttl_seconds: float = 3600.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()

    async def get(self, key: str) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, answer = entry
        if expires < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return answer

    async def put(self, key: str, answer: CachedAnswer) -> None:
        self._entries[key] = (time.monotonic() + self.ttl, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

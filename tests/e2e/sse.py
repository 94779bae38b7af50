"""A small Server-Sent Events reader for driving the public API in tests and benchmarks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """Parse ``event:``/``data:`` blocks; comments (pings) are skipped."""
    name, data = "message", []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield Event(name, json.loads("\n".join(data)))
            name, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())

"""How retrieval talks to its engine process: pickled frames over the process's pipes.

A frame is a 4-byte big-endian length and a pickle. A request is ``(id, method, args)``; its
answer ``(id, error, result)``, where ``error`` is None or the engine's message. Both ends are
retrieval's own code (the service and the worker it started), so pickle is safe here.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from dataclasses import dataclass
from typing import IO, Any

_LENGTH = struct.Struct(">I")


def encode(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


def read(stream: IO[bytes]) -> Any:
    """The next frame from a blocking stream; EOFError when it has closed."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError
    (length,) = _LENGTH.unpack(head)
    body = stream.read(length)
    if len(body) < length:
        raise EOFError
    return pickle.loads(body)


async def read_async(stream: asyncio.StreamReader) -> Any:
    """The next frame from an asyncio stream; EOFError when it has closed."""
    try:
        head = await stream.readexactly(_LENGTH.size)
        (length,) = _LENGTH.unpack(head)
        body = await stream.readexactly(length)
    except asyncio.IncompleteReadError:
        raise EOFError from None
    return pickle.loads(body)


@dataclass(frozen=True)
class ShardSettings:
    """How a new shard is made: vector size, HNSW graph (m, ef_construct), the search's ef,
    and from how many unindexed vectors a segment gets its HNSW graph."""

    dimensions: int
    hnsw_m: int = 16
    hnsw_ef_construct: int = 200
    hnsw_ef: int = 256
    index_after_points: int = 5_000

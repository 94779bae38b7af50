"""Server-sent events on the wire, as both providers' streaming APIs send them."""

from __future__ import annotations

from collections.abc import AsyncIterator


async def sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """The ``data`` of each server-sent event, a list per network read.

    Events split across reads are joined; the lines of a multi-line ``data`` field are joined
    with newlines, as the SSE specification says. Comments and other fields are skipped.
    """
    pending = b""
    lines: list[bytes] = []
    async for chunk in chunks:
        pending += chunk
        if b"\n" not in chunk:
            continue
        *complete, pending = pending.split(b"\n")
        batch: list[bytes] = []
        for raw in complete:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if lines:
                    batch.append(b"\n".join(lines))
                    lines = []
            elif line.startswith(b"data:"):
                value = line[5:]
                lines.append(value[1:] if value.startswith(b" ") else value)
        if batch:
            yield batch
    if lines:
        yield [b"\n".join(lines)]

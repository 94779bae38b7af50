"""Server-sent events on the wire, as both providers' streaming APIs send them."""

from __future__ import annotations

from collections.abc import AsyncIterator


async def sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """The ``data`` of each server-sent event, a list per network read.

    Events split across reads are joined; the lines of a multi-line ``data`` field are joined
    with newlines, as the SSE specification says. Comments and other fields are skipped.
    An event that is one ``data: ...`` line, as nearly every event of a token stream is,
    costs a slice, not a pass over its lines.
    """
    pending = b""
    async for chunk in chunks:
        pending += chunk
        if b"\n" not in chunk:
            continue
        if b"\r" in pending:
            # CRLF line ends; a CR left last waits for its LF in the next read.
            pending = pending.replace(b"\r\n", b"\n")
        *events, pending = pending.split(b"\n\n")
        batch: list[bytes] = []
        for event in events:
            if event.startswith(b"data: ") and b"\n" not in event:
                batch.append(event[6:])
            else:
                data = _data_of(event)
                if data is not None:
                    batch.append(data)
        if batch:
            yield batch
    # An event the end of the stream cut before its blank line: its complete lines count.
    end = pending.rfind(b"\n")
    if end >= 0:
        data = _data_of(pending[:end])
        if data is not None:
            yield [data]


def _data_of(event: bytes) -> bytes | None:
    """The data of one event's lines, or ``None`` when it has no ``data`` field."""
    lines: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines) if lines else None

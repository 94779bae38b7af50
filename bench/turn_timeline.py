"""Where a turn's added time to the first token goes, hop by hop, one stream at a time.

    uv run python bench/turn_timeline.py                  # 40 turns after 20 of warm-up
    uv run python bench/turn_timeline.py --turns 100 --pause 0.2

The loopback traffic is captured with tcpdump (Debian's package; capturing needs root or
CAP_NET_RAW) from before the services start, so that each HTTP/2 connection's header
compression can be followed from its first frame (hyperframe reads the frames, hpack the
headers) and every gRPC call named. The fake OpenAI
server and the services are placed as in ``whole_path.py`` (the services on the last CPU,
the fake and this client on the others). Turns are sent one at a time in one conversation,
``--pause`` seconds apart.

Each turn is cut into segments by the time its packets crossed loopback:

- the request path: the client's POST reaches the gateway; the gateway's ``SendMessage``
  leaves; conversation's ``StreamChat`` leaves; llm-router's POST to the provider leaves;
- the first token's path: the provider's first token leaves; llm-router's first message of
  the stream leaves; conversation's first text event leaves; the gateway's first ``delta``
  event leaves.

The six segments between those (the provider's own time left out) add up to what the three
hops add to the provider's time to the first token, as the wire sees it: the direct path's
client and this one's pay the same for their own HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import hpack
import uvloop
from hyperframe.frame import ContinuationFrame, DataFrame, Frame, HeadersFrame

from parley_gateway.auth import issue_token
from parley_gateway.settings import Settings as GatewaySettings

sys.path.insert(0, str(Path(__file__).parent))
from harness import Placement, client_session, free_port, host, spawn_fake, wait_http
from whole_path import FAST, bench_platform, new_conversations, start_placed, turn_stream

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SEND_MESSAGE = "/parley.conversation.v1.ConversationService/SendMessage"
STREAM_CHAT = "/parley.llm_router.v1.LlmRouter/StreamChat"
SEGMENTS = (
    ("gateway: request to SendMessage", "post", "send_message"),
    ("conversation: SendMessage to StreamChat", "send_message", "stream_chat"),
    ("llm-router: StreamChat to the provider's request", "stream_chat", "provider_post"),
    ("llm-router: first token to its message", "first_token", "router_first"),
    ("conversation: that message to its own", "router_first", "conversation_first"),
    ("gateway: that message to the SSE delta", "conversation_first", "gateway_first"),
)


@dataclass
class Packet:
    time: float
    source: int
    destination: int
    payload: bytes


def read_pcap(path: Path) -> list[Packet]:
    """The TCP segments with a payload of a loopback capture (IPv4 over Ethernet framing, as
    tcpdump writes ``-i lo``), in capture order."""
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nanos = magic in (0xA1B23C4D, 0x4D3CB2A1)
    link = struct.unpack(order + "I", data[20:24])[0]
    header = {1: 14, 113: 16}.get(link)
    if header is None:
        raise SystemExit(f"capture link type {link} is not Ethernet or Linux cooked")
    packets: list[Packet] = []
    offset = 24
    while offset + 16 <= len(data):
        seconds, fraction, captured, _ = struct.unpack(order + "IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        ip = frame[header:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        total = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[(ip[0] & 15) * 4 : total]
        source, destination = struct.unpack(">HH", tcp[:4])
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if payload:
            stamp = seconds + fraction / (1e9 if nanos else 1e6)
            packets.append(Packet(stamp, source, destination, payload))
    return packets


@dataclass
class Seen:
    """An HTTP/2 frame as it completed on the wire: a DATA frame with a payload, or a
    stream's headers (with the call's path)."""

    time: float
    stream: int
    kind: str  # "headers" or "data"
    path: str = ""


@dataclass
class Http2Direction:
    """One direction of one HTTP/2 connection: its frames as they complete."""

    decoder: hpack.Decoder = field(default_factory=hpack.Decoder)
    pending: bytes = b""
    started: bool = False
    block: bytes = b""
    frames: list[Seen] = field(default_factory=list)

    def feed(self, time_: float, payload: bytes) -> None:
        buffer = self.pending + payload
        if not self.started:
            self.started = True
            if buffer.startswith(PREFACE):
                buffer = buffer[len(PREFACE) :]
        while len(buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(buffer[9 : 9 + length]))
            buffer = buffer[9 + length :]
            if isinstance(frame, DataFrame) and frame.data:
                self.frames.append(Seen(time_, frame.stream_id, "data"))
            elif isinstance(frame, HeadersFrame | ContinuationFrame):
                self.block += frame.data
                if "END_HEADERS" in frame.flags:
                    headers = dict(self.decoder.decode(self.block))
                    self.block = b""
                    path = headers.get(":path", "")
                    self.frames.append(Seen(time_, frame.stream_id, "headers", path))
        self.pending = buffer


@dataclass
class Wire:
    """What the capture shows, by connection and direction."""

    # (source port, destination port) -> frames, for the gRPC connections
    http2: dict[tuple[int, int], Http2Direction]
    # the packets of the HTTP/1.1 connections (the client's to the gateway, llm-router's
    # to the provider), by (source port, destination port)
    http1: dict[tuple[int, int], list[Packet]]


def split(packets: list[Packet], ports: dict[str, int]) -> Wire:
    grpc_ports = {ports["conversation"], ports["llm-router"]}
    http1_ports = {ports["gateway"], ports["fake"]}
    http2: dict[tuple[int, int], Http2Direction] = defaultdict(Http2Direction)
    http1: dict[tuple[int, int], list[Packet]] = defaultdict(list)
    for packet in packets:
        key = (packet.source, packet.destination)
        if packet.source in grpc_ports or packet.destination in grpc_ports:
            http2[key].feed(packet.time, packet.payload)
        elif packet.source in http1_ports or packet.destination in http1_ports:
            http1[key].append(packet)
    return Wire(http2, http1)


@dataclass(frozen=True, order=True)
class Sent:
    """A call or request leaving: when, on which connection (client port, server port), and
    its HTTP/2 stream (0 for HTTP/1.1)."""

    time: float
    connection: tuple[int, int]
    stream: int = 0


def _calls(wire: Wire, server: int, path: str) -> list[Sent]:
    """Every call of ``path`` to the server on port ``server``, by when its headers left."""
    return sorted(
        Sent(frame.time, key, frame.stream)
        for key, direction in wire.http2.items()
        if key[1] == server
        for frame in direction.frames
        if frame.kind == "headers" and frame.path == path
    )


def _requests(wire: Wire, server: int, starting: bytes) -> list[Sent]:
    """Every HTTP/1.1 request to the server on port ``server`` whose first packet starts
    with ``starting``."""
    return sorted(
        Sent(packet.time, key)
        for key, packets in wire.http1.items()
        if key[1] == server
        for packet in packets
        if packet.payload.startswith(starting)
    )


def _answer_head(wire: Wire, request: Sent) -> bytes:
    """The first packet the server of an HTTP/1.1 ``request`` sent after it."""
    client, server = request.connection
    return next((p.payload for p in wire.http1[(server, client)] if p.time > request.time), b"")


def _first_data(wire: Wire, call: Sent, after: float) -> float:
    """When the server of ``call`` first sent a DATA frame on its stream after ``after``."""
    client, server = call.connection
    for frame in wire.http2[(server, client)].frames:
        if frame.stream == call.stream and frame.kind == "data" and frame.time > after:
            return frame.time
    raise LookupError(f"no data on stream {call.stream} after {after}")


def _after(sent: list[Sent], moment: float) -> Sent:
    for item in sent:
        if item.time > moment:
            return item
    raise LookupError(f"nothing after {moment}")


def _answered(wire: Wire, request: Sent, after: float, holding: bytes) -> float:
    """When the server of an HTTP/1.1 ``request`` first sent a packet holding ``holding``
    after ``after``."""
    client, server = request.connection
    for packet in wire.http1[(server, client)]:
        if packet.time > after and holding in packet.payload:
            return packet.time
    raise LookupError(f"no answer holding {holding!r} after {after}")


def timelines(wire: Wire, ports: dict[str, int], since: float) -> list[dict[str, float]]:
    """Each turn sent after ``since``: the moments of its path (see the module docstring)."""
    posts = _requests(wire, ports["gateway"], b"POST /v1/conversations/")
    send_messages = _calls(wire, ports["conversation"], SEND_MESSAGE)
    stream_chats = _calls(wire, ports["llm-router"], STREAM_CHAT)
    # llm-router's streamed requests to the provider (a background task's are not)
    provider_posts = [
        request
        for request in _requests(wire, ports["fake"], b"POST ")
        if b"text/event-stream" in _answer_head(wire, request)
    ]
    turns = []
    for post in (p for p in posts if p.time > since):
        send_message = _after(send_messages, post.time)
        stream_chat = _after(stream_chats, send_message.time)
        provider_post = _after(provider_posts, stream_chat.time)
        first_token = _answered(wire, provider_post, provider_post.time, b"data: ")
        router_first = _first_data(wire, stream_chat, first_token)
        conversation_first = _first_data(wire, send_message, router_first)
        turns.append(
            {
                "post": post.time,
                "send_message": send_message.time,
                "stream_chat": stream_chat.time,
                "provider_post": provider_post.time,
                "first_token": first_token,
                "router_first": router_first,
                "conversation_first": conversation_first,
                "gateway_first": _answered(wire, post, conversation_first, b"event: delta"),
            }
        )
    return turns


async def drive(args: argparse.Namespace, ports_out: dict[str, int]) -> float:
    """Start the fake and the platform, warm up, send the turns; the moment (on the
    capture's clock) after the warm-up."""
    workdir = Path(tempfile.mkdtemp(prefix="parley-turn-timeline-"))
    (workdir / "logs").mkdir()
    placement = Placement.split()
    fake_port = free_port()
    fake = spawn_fake(fake_port, FAST, placement, (workdir / "logs" / "fake.log").open("wb"))
    fake_url = f"http://127.0.0.1:{fake_port}"
    platform = bench_platform(workdir, fake_url)
    session = client_session(limit=10, total_timeout=60)
    try:
        await wait_http(f"{fake_url}/_fake/stats")
        await start_placed(platform, placement)
        ports_out.update({name: spec.port for name, spec in platform.specs.items()})
        ports_out["fake"] = fake_port
        settings = GatewaySettings()
        token = issue_token(settings.auth_secret, settings.auth_issuer, tenant="bench", user="b")
        conversation = await new_conversations(session, platform.gateway_url, token, 1)
        turn = turn_stream(session, platform.gateway_url, token, conversation)
        for _ in range(args.warmup):
            await turn(0)
        since = time.time()
        ttfts = []
        for _ in range(args.turns):
            await asyncio.sleep(args.pause)
            ttfts.append((await turn(0)).ttft * 1000)
        print(f"client's TTFT p50 {statistics.median(ttfts):.2f} ms", file=sys.stderr)
        await asyncio.sleep(0.5)  # the last packets reach the capture
        return since
    finally:
        await session.close()
        await platform.stop()
        fake.terminate()
        fake.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def table(turns: list[dict[str, float]]) -> str:
    lines = [
        "| segment | p50 ms | p90 ms | max ms |",
        "|---|---|---|---|",
    ]
    sums = [0.0] * len(turns)
    for title, start, end in SEGMENTS:
        values = sorted((t[end] - t[start]) * 1000 for t in turns)
        for i, t in enumerate(turns):
            sums[i] += (t[end] - t[start]) * 1000
        p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
        lines.append(
            f"| {title} | {statistics.median(values):.2f} | {p90:.2f} | {values[-1]:.2f} |"
        )
    request = sorted((t["provider_post"] - t["post"]) * 1000 for t in turns)
    relay = sorted((t["gateway_first"] - t["first_token"]) * 1000 for t in turns)
    lines.append(f"| request path, in all | {statistics.median(request):.2f} | | |")
    lines.append(f"| first token's path, in all | {statistics.median(relay):.2f} | | |")
    lines.append(
        f"| added to the first token | {statistics.median(sums):.2f} | | {max(sums):.2f} |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between turns")
    args = parser.parse_args()
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        raise SystemExit("tcpdump is not installed (Debian: apt-get install tcpdump)")
    with tempfile.TemporaryDirectory(prefix="parley-capture-") as folder:
        capture = Path(folder) / "lo.pcap"
        dump = subprocess.Popen(
            [tcpdump, "-i", "lo", "-n", "-s", "0", "-U", "-w", str(capture), "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)
        if dump.poll() is not None:
            raise SystemExit(
                f"tcpdump failed: {dump.stderr.read().decode() if dump.stderr else ''}"
            )
        ports: dict[str, int] = {}
        try:
            since = uvloop.run(drive(args, ports))
        finally:
            dump.send_signal(signal.SIGINT)
            dump.wait(10)
        turns = timelines(split(read_pcap(capture), ports), ports, since)
    print(f"host: {host()}; {len(turns)} turns, one at a time, {args.pause} s apart")
    print(table(turns))


if __name__ == "__main__":
    main()

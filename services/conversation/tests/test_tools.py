"""The built-in tools and the registry, without a turn: what each computes, fetches or
refuses, and the check of a call's arguments against its schema."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from parley_conversation.conversations import Conversation, Passage
from parley_conversation.prompt import CitedPassage
from parley_conversation.tools import ToolContext, ToolError, ToolRegistry, built_in
from parley_conversation.tools.calculator import Calculator, evaluate
from parley_conversation.tools.clock import CurrentTime
from parley_conversation.tools.http_fetch import HostAllowlist, HttpFetch

NOW = datetime(2026, 12, 4, 10, 30, tzinfo=UTC)
CONVERSATION = Conversation("conv_1", "", "", "", None, 0, NOW, NOW)


def context(conversation: Conversation = CONVERSATION) -> ToolContext:
    cited: list[CitedPassage] = []

    def cite(passage: Passage) -> CitedPassage:
        cited.append(CitedPassage(str(len(cited) + 1), passage))
        return cited[-1]

    return ToolContext(conversation, cite)


# calculator


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("25 * 0.8 + 3", 23.0),
        ("2 ** 10", 1024),
        ("(1 + 2) * -3", -9),
        ("7 // 2 + 7 % 2", 4),
        ("sqrt(16) + abs(-2)", 6.0),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("round(pi, 2)", 3.14),
        ("2 ** -1", 0.5),
        ("12_000 * 1.1", 13200.000000000002),
    ],
)
def test_the_calculator_computes_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "code"),
    [
        ("__import__('os').system('true')", "invalid_expression"),
        ("().__class__.__bases__", "invalid_expression"),
        ("open('/etc/passwd')", "invalid_expression"),
        ("x + 1", "invalid_expression"),
        ("'a' * 3", "invalid_expression"),
        ("[1, 2]", "invalid_expression"),
        ("lambda: 1", "invalid_expression"),
        ("2 ^ 10", "invalid_expression"),
        ("1 << 100000", "invalid_expression"),
        ("sqrt(x=4)", "invalid_expression"),
        ("True + 1", "invalid_expression"),
        ("1j * 2", "invalid_expression"),
        ("1 +", "invalid_expression"),
        ("(" * 300 + "1" + ")" * 300, "invalid_expression"),
        ("1+" * 300 + "1", "invalid_expression"),
        ("9 ** 9 ** 9", "result_too_large"),
        ("10 ** 5000", "result_too_large"),
        ("1 / 0", "math_error"),
        ("sqrt(-1)", "math_error"),
        ("10.0 ** 400", "math_error"),
        ("exp(1000)", "math_error"),
        ("1e308 * 10", "math_error"),
        ("(-8) ** 0.5", "math_error"),
    ],
)
def test_the_calculator_refuses_what_is_not_safe_arithmetic(expression: str, code: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ToolError) as refused:
        evaluate(expression)
    assert refused.value.code == code
    assert time.perf_counter() - started < 0.5  # refused before any large computation


async def test_the_calculator_tool_answers_text() -> None:
    assert await Calculator().run({"expression": "6 * 7"}, context()) == "42"


# current_time


async def test_current_time_in_a_time_zone() -> None:
    clock = CurrentTime(now=lambda: NOW)
    paris = json.loads(await clock.run({"timezone": "Europe/Paris"}, context()))
    assert paris == {
        "timezone": "Europe/Paris",
        "datetime": "2026-12-04T11:30:00+01:00",
        "weekday": "Friday",
        "utc_offset": "+01:00",
    }
    utc = json.loads(await clock.run({}, context()))
    assert utc["datetime"] == "2026-12-04T10:30:00+00:00"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime", "America"])
async def test_current_time_refuses_what_is_not_a_time_zone(zone: str) -> None:
    with pytest.raises(ToolError) as refused:
        await CurrentTime(now=lambda: NOW).run({"timezone": zone}, context())
    assert refused.value.code == "unknown_timezone"


# the registry


def test_arguments_are_checked_against_the_schema() -> None:
    registry = ToolRegistry([Calculator()])
    tool, arguments = registry.prepare("calculator", '{"expression": "1+1"}')
    assert tool.spec.name == "calculator"
    assert arguments == {"expression": "1+1"}
    cases = {
        '{"expr": "1"}': "'expression' is a required property",
        '{"expression": 5}': "expression: 5 is not of type 'string'",
        '{"expression": "1", "extra": 1}': "Additional properties are not allowed",
        '{"expression": "1"': "not valid JSON",
        '["1"]': "must be a JSON object",
    }
    for text, says in cases.items():
        with pytest.raises(ToolError) as refused:
            registry.prepare("calculator", text)
        assert refused.value.code == "invalid_arguments"
        assert says in refused.value.message
    with pytest.raises(ToolError) as unknown:
        registry.prepare("rm_rf", "{}")
    assert unknown.value.code == "unknown_tool"


def test_which_tools_a_conversation_is_offered() -> None:
    class NoSearch:
        async def search(self, knowledge_base_id: str, query: str, top_k: int) -> list[Passage]:
            return []

    registry = built_in(
        ("search_knowledge_base", "calculator", "current_time"),
        NoSearch(),
        top_k=5,
        fetch_hosts=frozenset(),
        fetch_timeout=1.0,
        fetch_max_bytes=1000,
    )
    assert [t.name for t in registry.offered(CONVERSATION)] == ["calculator", "current_time"]
    with_kb = Conversation("conv_2", "", "", "handbook", None, 0, NOW, NOW)
    assert [t.name for t in registry.offered(with_kb)] == [
        "search_knowledge_base",
        "calculator",
        "current_time",
    ]
    for spec in registry.offered(with_kb):
        assert json.loads(spec.parameters_json)["type"] == "object"


# http_fetch


class Site(BaseHTTPRequestHandler):
    """A small site on loopback: pages, redirects, a large body, a slow one, an image."""

    def do_GET(self) -> None:
        if self.path == "/page":
            self._send(
                200,
                "text/html; charset=utf-8",
                b"<html><head><style>p{}</style><script>alert(1)</script></head>"
                b"<body><h1>Leave</h1><p>25 days a year.</p></body></html>",
            )
        elif self.path == "/json":
            self._send(200, "application/json", b'{"days": 25}')
        elif self.path == "/here":
            self._redirect("/page")
        elif self.path == "/away":
            self._redirect("http://127.0.0.2:9/secret")
        elif self.path == "/big":
            self._send(200, "text/plain", b"x" * 50_000)
        elif self.path == "/slow":
            time.sleep(1.5)
            self._send(200, "text/plain", b"late")
        elif self.path == "/image":
            self._send(200, "image/png", b"\x89PNG")
        else:
            self._send(404, "text/plain", b"no")

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, to: str) -> None:
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def fetcher(site: str, max_bytes: int = 10_000, timeout: float = 5.0) -> HttpFetch:
    return HttpFetch(frozenset({site}), timeout, max_bytes)


async def test_http_fetch_reads_an_allowed_page_as_text(site: str) -> None:
    fetch = fetcher(site)
    page = await fetch.run({"url": f"http://{site}/page"}, context())
    assert page == "HTTP 200 text/html\n\nLeave\n25 days a year."
    assert "alert" not in page
    assert await fetch.run({"url": f"http://{site}/json"}, context()) == (
        'HTTP 200 application/json\n\n{"days": 25}'
    )
    # A redirect to a URL on the list is followed.
    followed = await fetch.run({"url": f"http://{site}/here"}, context())
    assert followed.endswith("25 days a year.")


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.2:{port}/page", "host_not_allowed"),
        ("http://localhost:{port}/page", "host_not_allowed"),
        ("http://127.0.0.1/page", "host_not_allowed"),  # the default port is not the listed one
        ("file:///etc/passwd", "invalid_url"),
        ("ftp://127.0.0.1:{port}/page", "invalid_url"),
        ("http://user:pw@127.0.0.1:{port}/page", "invalid_url"),
        ("http://127.0.0.1:99999/page", "invalid_url"),
    ],
)
async def test_http_fetch_refuses_hosts_off_the_list(site: str, url: str, code: str) -> None:
    port = site.split(":")[1]
    with pytest.raises(ToolError) as refused:
        await fetcher(site).run({"url": url.format(port=port)}, context())
    assert refused.value.code == code


async def test_http_fetch_does_not_follow_a_redirect_off_the_list(site: str) -> None:
    with pytest.raises(ToolError) as refused:
        await fetcher(site).run({"url": f"http://{site}/away"}, context())
    assert refused.value.code == "host_not_allowed"
    assert "127.0.0.2:9" in refused.value.message


async def test_http_fetch_caps_size_refuses_binary_and_times_out(site: str) -> None:
    big = await fetcher(site, max_bytes=1000).run({"url": f"http://{site}/big"}, context())
    assert big == "HTTP 200 text/plain\n\n" + "x" * 1000 + "\n[the body was cut at 1000 bytes]"
    with pytest.raises(ToolError) as binary:
        await fetcher(site).run({"url": f"http://{site}/image"}, context())
    assert binary.value.code == "unsupported_content"
    with pytest.raises(ToolError) as missing:
        await fetcher(site).run({"url": f"http://{site}/nothing"}, context())
    assert (missing.value.code, missing.value.message) == (
        "http_status",
        "the server answered HTTP 404",
    )
    with pytest.raises(TimeoutError):
        await fetcher(site, timeout=0.3).run({"url": f"http://{site}/slow"}, context())


def test_the_allowlist_compares_hosts_and_ports() -> None:
    allowed = HostAllowlist(frozenset({"Docs.Example.com", "api.example.com:8443"}))
    allowed.check("https://docs.example.com/a")
    allowed.check("http://DOCS.example.com:80/a")
    allowed.check("https://api.example.com:8443/v1")
    for url in (
        "https://docs.example.com:8443/a",
        "https://api.example.com/v1",
        "https://docs.example.com.evil.test/",
        "https://evil.test/?docs.example.com",
    ):
        with pytest.raises(ToolError):
            allowed.check(url)

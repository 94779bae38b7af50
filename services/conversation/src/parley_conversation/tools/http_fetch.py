"""``http_fetch``: a web page or API answer from an allowlist of hosts. Off unless the
operator lists hosts (``HTTP_FETCH_ALLOWED_HOSTS``).

Only ``http`` and ``https`` URLs whose host (and port) is on the list are fetched; an entry
``docs.example.com`` allows that host on the scheme's default port, ``docs.example.com:8443``
that port. Redirects are followed (at most three) only to URLs the list allows too; proxies
from the environment are ignored. The body is read up to ``max_bytes`` within ``timeout``
seconds; text, JSON and XML are returned (HTML as its visible text), anything else refused.

The standard library's ``urllib`` does the request, in a thread (it blocks): the service's
image carries no asynchronous HTTP client, and this tool is off by default.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from http.client import HTTPMessage
from typing import IO, Any
from urllib.parse import urlsplit

from parley_conversation.conversations import Conversation
from parley_conversation.tools.base import ToolContext, ToolError, ToolSpec

MAX_REDIRECTS = 3
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TEXT_TYPES = ("application/json", "application/xml", "application/xhtml+xml")


class _VisibleText(HTMLParser):
    """The text of an HTML page a reader sees: no markup, scripts or styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "noscript", "template"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "noscript", "template") and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.parts.append(" ".join(data.split()))


def visible_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    return "\n".join(parser.parts)


class HostAllowlist:
    """Entries ``host`` (the scheme's default port) or ``host:port``, compared case-blind."""

    def __init__(self, entries: frozenset[str]) -> None:
        self.entries = frozenset(e.strip().lower() for e in entries if e.strip())

    def check(self, url: str) -> None:
        """Pass for a URL the list allows; ``ToolError`` ``invalid_url`` or
        ``host_not_allowed`` otherwise."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ToolError("invalid_url", "the URL is not valid") from None
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ToolError("invalid_url", "only http and https URLs with a host are fetched")
        if parts.username is not None or parts.password is not None:
            raise ToolError("invalid_url", "URLs with credentials are not fetched")
        host = parts.hostname.lower()
        if port is None or port == _DEFAULT_PORTS[parts.scheme]:
            allowed = host in self.entries or f"{host}:{_DEFAULT_PORTS[parts.scheme]}" in (
                self.entries
            )
        else:
            allowed = f"{host}:{port}" in self.entries
        if not allowed:
            shown = f"{host}:{port}" if port else host
            raise ToolError("host_not_allowed", f"{shown} is not on the list of hosts to fetch")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def __init__(self, allowlist: HostAllowlist) -> None:
        self.allowlist = allowlist

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        try:
            self.allowlist.check(newurl)
        except ToolError:
            fp.close()
            raise  # the fetch ends here: a redirect off the list is not followed
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class HttpFetch:
    """The ``http_fetch`` tool (see the module docstring)."""

    spec = ToolSpec(
        name="http_fetch",
        description=(
            "Fetch a web page or API answer (GET) from one of the hosts the operator allows; "
            "returns its status, type and text."
        ),
        parameters={
            "type": "object",
            "properties": {
                "url": {"type": "string", "minLength": 8, "maxLength": 2000},
            },
            "required": ["url"],
            "additionalProperties": False,
        },
    )

    def __init__(self, allowed_hosts: frozenset[str], timeout: float, max_bytes: int) -> None:
        self.allowlist = HostAllowlist(allowed_hosts)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), _CheckedRedirects(self.allowlist)
        )

    def offered(self, conversation: Conversation) -> bool:
        return bool(self.allowlist.entries)

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> str:
        url = str(arguments["url"])
        self.allowlist.check(url)
        return await asyncio.to_thread(self._fetch, url)

    def _fetch(self, url: str) -> str:
        deadline = time.monotonic() + self.timeout
        request = urllib.request.Request(
            url, headers={"User-Agent": "Parley http_fetch", "Accept": "text/*, application/json"}
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                kind = response.headers.get_content_type()
                if not (kind.startswith("text/") or kind in _TEXT_TYPES):
                    raise ToolError("unsupported_content", f"{kind} is not text")
                charset = response.headers.get_content_charset() or "utf-8"
                body, cut = self._read(response, deadline)
                status = response.status
        except urllib.error.HTTPError as error:
            error.close()
            raise ToolError("http_status", f"the server answered HTTP {error.code}") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise error.reason from None
            raise ToolError("fetch_failed", f"could not fetch the URL ({error.reason})") from None
        text = body.decode(charset if _known(charset) else "utf-8", errors="replace")
        if kind in ("text/html", "application/xhtml+xml"):
            text = visible_text(text)
        note = f"\n[the body was cut at {self.max_bytes} bytes]" if cut else ""
        return f"HTTP {status} {kind}\n\n{text}{note}"

    def _read(self, response: Any, deadline: float) -> tuple[bytes, bool]:
        """The body up to ``max_bytes``, read a piece at a time until ``deadline``."""
        chunks: list[bytes] = []
        size = 0
        while size <= self.max_bytes:
            if time.monotonic() > deadline:
                raise TimeoutError("the body did not arrive in time")
            chunk = response.read1(65536)
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)[: self.max_bytes], True


def _known(charset: str) -> bool:
    try:
        "".encode(charset)
    except LookupError:
        return False
    return True

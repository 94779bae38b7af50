"""Browser safety: CORS for an allowlist of origins, and security headers on every response.

**CORS** (:class:`CorsMiddleware`), from ``CORS_ORIGINS``:

- a listed origin may read responses and send credentials: ``Access-Control-Allow-Origin``
  names it, with ``Access-Control-Allow-Credentials: true``;
- ``*`` in the list lets any other origin read responses, never with credentials (the header
  is ``*``, which browsers refuse to pair with cookies or HTTP authentication);
- any other origin gets no CORS header, so the browser keeps the response from the page;
- a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
  here: 204 with the methods, the requested headers and ``Access-Control-Max-Age`` for an
  allowed origin, a 403 envelope (``origin_not_allowed``) for any other;
- the headers a page may read besides the simple ones: ``Retry-After``, ``RateLimit-*``,
  ``X-Request-ID``, ``Content-Disposition``, ``Location``;
- browsers do not apply CORS to WebSockets, so a handshake whose ``Origin`` is neither
  allowed nor the gateway's own host is refused (403) before any route sees it. Clients
  other than browsers send no ``Origin`` and are not concerned.

**Security headers** (:class:`SecurityHeadersMiddleware`) on every HTTP response, errors and
the last-resort 500 included: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
no-referrer``, ``X-Frame-Options: DENY``, a ``Content-Security-Policy`` that lets an API
response load and run nothing (the interactive docs get one that admits what they load), and
``Strict-Transport-Security`` when ``HSTS_MAX_AGE_SECONDS`` is set.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley_gateway.errors import envelope
from parley_runtime.context import request_id_var

_ORIGIN = re.compile(r"https?://(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::\d{1,5})?")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
# What a client's request id may be (middleware.py keeps the same alphabet).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
EXPOSED = (
    "Retry-After, RateLimit, RateLimit-Policy, RateLimit-Limit, RateLimit-Remaining, "
    "RateLimit-Reset, X-Request-ID, Content-Disposition, Location"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The interactive docs load Swagger UI or ReDoc from a CDN and start them with inline script.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src https://fonts.gstatic.com; connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True, slots=True)
class Origins:
    """The origins browsers may call from: ``listed`` ones with credentials, and whether
    ``any`` other may read responses."""

    listed: frozenset[str] = frozenset()
    any: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.listed) or self.any


def parse_origins(value: str) -> Origins:
    """The origins of ``CORS_ORIGINS`` (comma- or space-separated), or ValueError naming the
    first one that is not ``scheme://host[:port]`` (no path, no trailing slash) or ``*``."""
    listed: set[str] = set()
    anyone = False
    for item in re.split(r"[\s,]+", value.strip()):
        if not item:
            continue
        if item == "*":
            anyone = True
            continue
        origin = item.lower()
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(
                f"{item!r} is not an origin: write scheme://host[:port], without a path or a "
                "trailing slash, or *"
            )
        listed.add(origin)
    return Origins(frozenset(listed), anyone)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class CorsMiddleware:
    """CORS for :class:`Origins` (see the module docstring)."""

    def __init__(self, app: ASGIApp, origins: Origins, max_age: int = 600) -> None:
        self.app = app
        self.origins = origins
        self.max_age = str(max_age).encode()

    def _allowed(self, origin: str) -> list[tuple[bytes, bytes]] | None:
        """The CORS headers of a response to ``origin``, or None when it may not read it."""
        if origin.lower() in self.origins.listed:
            return [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-credentials", b"true"),
            ]
        if self.origins.any:
            return [(b"access-control-allow-origin", b"*")]
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = self._allowed(origin)
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            await self._preflight(scope, allowed)(scope, receive, send)
            return
        if allowed is None and not self.origins.enabled:
            await self.app(scope, receive, send)
            return
        extra = [*(allowed or ()), (b"vary", b"Origin")]
        if allowed is not None:
            extra.append((b"access-control-expose-headers", EXPOSED.encode()))

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _preflight(self, scope: Scope, allowed: list[tuple[bytes, bytes]] | None) -> Response:
        vary = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        if allowed is None:
            incoming = _header(scope, b"x-request-id")
            request_id = (
                incoming if incoming and _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
            )
            token = request_id_var.set(request_id)
            try:
                body = envelope("origin_not_allowed", "this origin may not call the API")
            finally:
                request_id_var.reset(token)
            return JSONResponse(
                body, status_code=403, headers={"Vary": vary, "X-Request-ID": request_id}
            )
        requested = _header(scope, b"access-control-request-headers") or ""
        names = [n.strip() for n in requested.split(",") if n.strip()]
        headers = {
            "Access-Control-Allow-Methods": METHODS,
            "Access-Control-Max-Age": self.max_age.decode(),
            "Vary": vary,
        }
        if names and all(_HEADER_NAME.fullmatch(n) for n in names):
            headers["Access-Control-Allow-Headers"] = ", ".join(names)
        response = Response(status_code=204, headers=headers)
        for name, value in allowed:
            response.raw_headers.append((name, value))
        return response

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin")
        if origin is None or self._allowed(origin) is not None or _same_host(origin, scope):
            await self.app(scope, receive, send)
            return
        message = await receive()
        if message["type"] == "websocket.connect":
            # Closing before accepting refuses the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": ""})


def _same_host(origin: str, scope: Scope) -> bool:
    host = _header(scope, b"host")
    _, _, origin_host = origin.lower().partition("://")
    return host is not None and origin_host == host.lower()


class SecurityHeadersMiddleware:
    """Security headers on every HTTP response (see the module docstring); headers a
    response set itself are kept."""

    def __init__(
        self, app: ASGIApp, hsts_max_age: int = 0, docs_paths: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        common = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
        ]
        if hsts_max_age:
            hsts = f"max-age={hsts_max_age}; includeSubDomains"
            common.append((b"strict-transport-security", hsts.encode()))
        self.api = [*common, (b"content-security-policy", API_CSP.encode())]
        self.docs = [*common, (b"content-security-policy", DOCS_CSP.encode())]
        self.docs_paths = frozenset(docs_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = self.docs if scope["path"] in self.docs_paths else self.api

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in added if n not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

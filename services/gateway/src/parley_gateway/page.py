"""The chat page's files (``web/``), read once when the app is built.

Every file is served from ``/assets/<build>/<name>``, where ``<build>`` is a hash of all the
files together: a changed file changes every URL, so the files can be cached for a year
(``immutable``) and a new release is never mixed with an old one. The page's modules import
each other by relative paths, which resolve under the same prefix. ``index.html`` is the one
file served by its own path (``/``), revalidated on every load (``no-cache`` with an ETag)
and carrying the build in its URLs. Each file keeps a gzip copy made here, sent to clients
that accept it: the page is small, and gzip at level 9 once beats compressing per request.

``vendor.js`` is built from ``services/gateway/web-src`` (marked, DOMPurify, highlight.js)
and checked in; the rest is written by hand.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

WEB = Path(__file__).parent / "web"
INDEX = "index.html"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}
# The page runs its own modules and styles only: no inline script or style, no eval, no
# other origin; the API is called on the same origin.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
ASSET_CACHE = "public, max-age=31536000, immutable"
PAGE_CACHE = "no-cache"
# Files smaller than this are sent as they are: gzip would not pay for its header.
GZIP_MIN_BYTES = 512


@dataclass(frozen=True, slots=True)
class Asset:
    """One file as served: its bytes, a gzip copy when worth one, its type and its ETag."""

    body: bytes
    gzipped: bytes | None
    media_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, media_type: str) -> Asset:
        digest = hashlib.sha256(body).hexdigest()[:20]
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        worth = len(body) >= GZIP_MIN_BYTES and len(packed) < len(body)
        return cls(body, packed if worth else None, media_type, f'"{digest}"')


@dataclass(frozen=True, slots=True)
class Page:
    """The page (``index``) and the files it loads (``assets``, by name), under ``build``."""

    build: str
    index: Asset
    assets: dict[str, Asset]

    @classmethod
    def load(cls, folder: Path = WEB, *, dev_sign_in: bool = False) -> Page:
        """Read ``folder``; ``dev_sign_in`` tells the page to offer the development sign-in."""
        files = {
            path.name: path.read_bytes()
            for path in sorted(folder.iterdir())
            if path.is_file() and path.suffix in MEDIA_TYPES and path.name != INDEX
        }
        hashed = hashlib.sha256()
        for name, body in files.items():
            hashed.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
        build = hashed.hexdigest()[:16]
        template = (folder / INDEX).read_text(encoding="utf-8")
        index = template.replace("{{build}}", build).replace(
            "{{dev_sign_in}}", "on" if dev_sign_in else "off"
        )
        return cls(
            build=build,
            index=Asset.of(index.encode(), MEDIA_TYPES[".html"]),
            assets={
                name: Asset.of(body, MEDIA_TYPES[Path(name).suffix]) for name, body in files.items()
            },
        )

"""The chat page and its files as the gateway serves them: types, caching, compression, the
Content-Security-Policy, the size budget, and their absence from the API's OpenAPI."""

from __future__ import annotations

import gzip
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from parley_gateway.page import WEB, Page
from parley_gateway.settings import Settings

from .conftest import Serve

# First load: the page and every file it may load, compressed as served.
BUDGET_BYTES = 200_000


@pytest.fixture
async def client(serve_gateway: Serve) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_gateway(Settings()) as http:
        yield http


async def _raw(
    client: httpx.AsyncClient, path: str, **headers: str
) -> tuple[httpx.Response, bytes]:
    """The response and its body as sent on the wire (not decompressed)."""
    async with client.stream("GET", path, headers=headers) as response:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    return response, body


def _asset_paths(index: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/assets/[0-9a-f]{16}/[a-z0-9-]+\.(?:js|css|svg))"', index)


async def test_the_page_runs_only_its_own_files(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-cache"
    # No inline script or style: every script is a file of the page.
    assert re.findall(r"<script(?![^>]*\bsrc=)", response.text) == []
    assert "<style" not in response.text
    assert " style=" not in response.text
    assert 'name="parley-dev-sign-in" content="off"' in response.text


async def test_files_are_served_with_their_types_and_cached_for_a_year(
    client: httpx.AsyncClient,
) -> None:
    index = (await client.get("/")).text
    paths = _asset_paths(index)
    assert {p.rsplit("/", 1)[1] for p in paths} >= {"app.js", "app.css", "vendor.js", "icon.svg"}
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    for path in paths:
        response = await client.get(path)
        assert response.status_code == 200, path
        suffix = path[path.rindex(".") :]
        assert response.headers["content-type"] == types.get(suffix, "image/svg+xml")
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["x-content-type-options"] == "nosniff"
        # A client holding the file is told so without the body.
        again = await client.get(path, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""


async def test_modules_import_each_other_under_the_same_build(client: httpx.AsyncClient) -> None:
    index = (await client.get("/")).text
    app = next(p for p in _asset_paths(index) if p.endswith("/app.js"))
    build = app.split("/")[2]
    source = (await client.get(app)).text
    imported = re.findall(r'from "\./([a-z0-9-]+\.js)"', source)
    assert "markdown.js" in imported
    for name in imported:
        assert (await client.get(f"/assets/{build}/{name}")).status_code == 200


async def test_files_are_gzipped_for_clients_that_take_it(client: httpx.AsyncClient) -> None:
    index = (await client.get("/")).text
    vendor = next(p for p in _asset_paths(index) if p.endswith("/vendor.js"))
    packed, body = await _raw(client, vendor, **{"Accept-Encoding": "gzip"})
    plain, whole = await _raw(client, vendor, **{"Accept-Encoding": "identity"})
    assert packed.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert gzip.decompress(body) == whole
    assert len(body) < len(whole) / 2
    assert packed.headers["vary"] == "Accept-Encoding"


async def test_the_first_load_fits_the_budget(client: httpx.AsyncClient) -> None:
    """Every file of the page counts, whether the first load needs it or not."""
    _, body = await _raw(client, "/", **{"Accept-Encoding": "gzip"})
    total = len(body)
    served = {"index.html"}
    page = Page.load()
    for name in page.assets:
        _, body = await _raw(client, f"/assets/{page.build}/{name}", **{"Accept-Encoding": "gzip"})
        total += len(body)
        served.add(name)
    on_disk = {p.name for p in WEB.iterdir() if p.suffix in (".html", ".js", ".css", ".svg")}
    assert served == on_disk
    assert 20_000 < total < BUDGET_BYTES, total


async def test_a_file_of_another_build_or_none_is_a_404(client: httpx.AsyncClient) -> None:
    for path in ("/assets/0123456789abcdef/app.js", "/assets/x/app.js", "/assets/"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    build = Page.load().build
    for name in ("nope.js", "..%2Fpage.py", "index.html"):
        response = await client.get(f"/assets/{build}/{name}")
        assert response.status_code == 404, name


async def test_head_answers_like_get_without_a_body(client: httpx.AsyncClient) -> None:
    response = await client.head("/")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 1000


async def test_the_page_is_not_part_of_the_api_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/" not in paths
    assert not [p for p in paths if p.startswith("/assets") or "sign-in" in p]
    assert "/v1/me" in paths

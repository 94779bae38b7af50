"""The chat page at ``/`` and the files it loads (page.py says how they are cached).

Open to anyone: the page holds no data, it signs in and calls the API like any other client.
Not part of the public API's OpenAPI document.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from parley_gateway.auth import PUBLIC
from parley_gateway.page import ASSET_CACHE, PAGE_CACHE, PAGE_CSP, Asset, Page
from parley_runtime.errors import NotFound

router = APIRouter(tags=["page"], include_in_schema=False, dependencies=[PUBLIC])


def _served(request: Request, asset: Asset, cache: str) -> Response:
    """``asset`` (gzipped when the client takes it), or 304 when the client has it."""
    headers = {"Cache-Control": cache, "ETag": asset.etag, "Vary": "Accept-Encoding"}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = asset.body
    if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        body = b""
    return Response(body, media_type=asset.media_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
async def chat_page(request: Request) -> Response:
    """The chat page, under a Content-Security-Policy that runs only its own files."""
    page: Page = request.app.state.page
    response = _served(request, page.index, PAGE_CACHE)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


@router.api_route("/assets/{build}/{name}", methods=["GET", "HEAD"])
async def page_asset(build: str, name: str, request: Request) -> Response:
    """One file of the page, cached for a year: its URL changes with every release. Only the
    names the page holds are looked up; anything else is a 404."""
    page: Page = request.app.state.page
    asset = page.assets.get(name)
    if build != page.build or asset is None:
        # A page of an older release asks for its files: reloading fetches the new ones.
        raise NotFound("no such file of the page; reload it", code="not_found")
    return _served(request, asset, ASSET_CACHE)

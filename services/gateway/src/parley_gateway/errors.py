"""The public error envelope, and the one place errors become HTTP responses.

Every error a client sees is ``{"error": {"code", "message", "request_id"}}`` with a status
that matches it; no stack trace or provider body ever leaves the gateway. What no handler here
covers, the last resort in :mod:`parley_gateway.middleware` answers as a 500 envelope.
:func:`responses` documents the statuses a route returns, with the envelope, in OpenAPI.
"""

from __future__ import annotations

from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from parley_runtime.context import request_id_var
from parley_runtime.errors import ParleyError, from_rpc_error

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    # A slow internal service is reported like an unavailable one: retry later.
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
}
# Errors whose code says more than their gRPC status: a size limit is RESOURCE_EXHAUSTED
# inside, but the same request will never fit, so it is a 413 without Retry-After.
STATUS_BY_CODE = {"document_too_large": 413, "unsupported_content_type": 415}
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


def envelope(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": request_id_var.get()}}


def status_for(error: ParleyError) -> int:
    if error.code in STATUS_BY_CODE:
        return STATUS_BY_CODE[error.code]
    if error.code.startswith("provider_") and error.status == grpc.StatusCode.FAILED_PRECONDITION:
        return 502  # the model provider refused: not the client's fault, nor ours
    return HTTP_STATUS.get(error.status, 500)


def error_response(error: ParleyError) -> JSONResponse:
    """The envelope of ``error``, with ``Retry-After`` when sending it again may work
    (:attr:`ParleyError.retryable`, the one rule every hop follows)."""
    status = status_for(error)
    headers = {}
    # A conflict that passes (a conversation answering another message) says when to retry.
    if (error.retryable or error.retry_after is not None) and status != 413:
        headers["Retry-After"] = str(max(1, round(error.retry_after or 1)))
    return JSONResponse(envelope(error.code, error.message), status_code=status, headers=headers)


def as_parley_error(error: BaseException) -> ParleyError:
    if isinstance(error, ParleyError):
        return error
    if isinstance(error, grpc.RpcError):
        return from_rpc_error(error)
    raise error


def _field_path(location: tuple[Any, ...]) -> str:
    # A path may hold a client's dict key: escape what UTF-8 cannot carry (lone surrogates).
    path = ".".join(str(part) for part in location)
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at the request's path: the router's 405 names only
    those of the first route it tried, and each method of a path is its own route."""
    allowed = []
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.routes):
            allowed.append(method)
    return ", ".join(allowed)


def install(app: FastAPI) -> None:
    """Register the handlers that render every error as the envelope."""

    @app.exception_handler(ParleyError)
    async def _parley(request: Request, error: ParleyError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(grpc.RpcError)
    async def _rpc(request: Request, error: grpc.RpcError) -> JSONResponse:
        return error_response(from_rpc_error(error))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            path = _field_path(tuple(item.get("loc", ())))
            if item.get("type") == "json_invalid":
                problems.append(f"{path}: the body is not valid JSON")
            else:
                problems.append(f"{path}: {item.get('msg', 'invalid')}")
        return JSONResponse(envelope("invalid_request", "; ".join(problems)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(error.status_code, "http_error")
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return JSONResponse(
            envelope(code, str(error.detail)), status_code=error.status_code, headers=headers
        )


class ErrorBody(BaseModel):
    """What went wrong: a stable code to branch on, a message to show, the request id."""

    code: str
    message: str
    request_id: str | None


class ErrorEnvelope(BaseModel):
    """Every error the API returns."""

    error: ErrorBody


_MEANINGS = {
    400: "The body could not be read as JSON of the expected encoding.",
    401: "Missing, malformed or expired credentials.",
    403: "The credentials lack the scope this request needs (named in the message).",
    404: "No such id for this caller (unknown, deleted, or another tenant's).",
    409: "The request conflicts with the current state (e.g. the conversation is busy).",
    413: "The body, or the document in it, passes its size limit (named in the message).",
    415: "The file is not a kind of document a knowledge base takes (what it is, named).",
    422: "A malformed input, with its field path, or a broken limit, naming it.",
    429: "A rate limit or quota; Retry-After says when to send again.",
    500: "An internal error; the request id finds it in the logs.",
    502: "The model provider failed or refused the turn.",
    503: "An internal service is down or slow; Retry-After says when to send again.",
}


# What each status's envelope looks like, for the OpenAPI document.
_EXAMPLES = {
    400: ("bad_request", "the body is not valid JSON"),
    401: ("missing_credentials", "send 'Authorization: Bearer <token>'"),
    403: ("missing_scope", "this request needs the 'chat' scope"),
    404: ("conversation_not_found", "conversation 'conv_1' not found"),
    409: ("conversation_busy", "the conversation is busy; retry the message"),
    413: ("body_too_large", "the request body exceeds the limit of 1048576 bytes"),
    415: ("unsupported_content_type", "the file is a PNG image; a knowledge base takes ..."),
    422: ("invalid_request", "body.content: Field required"),
    429: ("rate_limited", "too many requests; retry in 2 s"),
    500: ("internal", "internal error"),
    502: ("provider_refused", "the model provider refused the request"),
    503: ("service_unavailable", "an internal service is unavailable"),
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route's error ``statuses``, each the envelope, with an
    example."""
    return {
        status: {
            "model": ErrorEnvelope,
            "description": _MEANINGS[status],
            "content": {"application/json": {"example": _example(status)}},
        }
        for status in statuses
    }


def _example(status: int) -> dict[str, Any]:
    code, message = _EXAMPLES[status]
    return {"error": {"code": code, "message": message, "request_id": "4f9c2e7a1b3d4c5e"}}

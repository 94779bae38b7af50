"""The public error envelope, and the one place errors become HTTP responses.

Every error a client sees is ``{"error": {"code", "message", "request_id"}}`` with a status
that matches it; no stack trace or provider body ever leaves the gateway.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from parley_runtime.context import request_id_var
from parley_runtime.errors import ParleyError, from_rpc_error

log = logging.getLogger("parley.gateway")

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


def envelope(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": request_id_var.get()}}


def status_for(error: ParleyError) -> int:
    if error.code.startswith("provider_") and error.status == grpc.StatusCode.FAILED_PRECONDITION:
        return 502  # the model provider refused: not the client's fault, nor ours
    return HTTP_STATUS.get(error.status, 500)


def error_response(error: ParleyError) -> JSONResponse:
    """The envelope of ``error``, with ``Retry-After`` when sending it again may work
    (:attr:`ParleyError.retryable`, the one rule every hop follows)."""
    status = status_for(error)
    headers = {}
    if error.retryable:
        headers["Retry-After"] = str(max(1, round(error.retry_after or 1)))
    return JSONResponse(envelope(error.code, error.message), status_code=status, headers=headers)


def as_parley_error(error: BaseException) -> ParleyError:
    if isinstance(error, ParleyError):
        return error
    if isinstance(error, grpc.RpcError):
        return from_rpc_error(error)
    raise error


def _field_path(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location)


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
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return JSONResponse(envelope(code, str(error.detail)), status_code=error.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=error)
        return JSONResponse(envelope("internal", "internal error"), status_code=500)

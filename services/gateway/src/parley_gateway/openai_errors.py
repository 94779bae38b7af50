"""Errors on the OpenAI-compatible surface, in OpenAI's shape.

OpenAI's clients read ``{"error": {"message", "type", "param", "code"}}`` and choose their
exception from the HTTP status (the ``openai`` SDK's ``NotFoundError``, ``RateLimitError``
and so on), so every error under ``/openai/`` is rendered here, never as Parley's envelope:

- :class:`OpenAIRoute` renders whatever a route raises (a Parley error, a peer's gRPC status,
  a validation error, a body over its cap, a bug) before FastAPI's handlers see it;
- :func:`not_served` answers the paths and methods no route serves (404, or 405 with
  ``Allow``).

The statuses are Parley's (:func:`parley_gateway.errors.status_for`) with two changes that
OpenAI's clients expect: malformed input is a 400, not a 422, and an unknown model is a 404
with code ``model_not_found``. ``code`` is otherwise Parley's stable code, ``type`` follows
the status, ``param`` names the request field at fault when there is one, and
``Retry-After`` is sent on the same rule as everywhere else in the API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import grpc
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from parley_gateway.body_limit import BodyTooLarge, CappedRoute
from parley_gateway.errors import HTTP_CODES, status_for
from parley_runtime.errors import Internal, InvalidArgument, ParleyError, from_rpc_error

log = logging.getLogger("parley.gateway")

# OpenAI's ``type`` of each status; any other 4xx is an invalid request.
TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}
# Parley's codes whose name OpenAI's clients know under another one.
CODES = {"unknown_model": "model_not_found"}
# The request field a peer's error is about, by its code (llm-router's checks).
PARAMS = {
    "unknown_model": "model",
    "max_tokens_out_of_range": "max_tokens",
    "invalid_temperature": "temperature",
    "invalid_tool": "tools",
    "invalid_role": "messages",
    "invalid_message": "messages",
    "empty_messages": "messages",
    "empty_inputs": "input",
    "too_many_inputs": "input",
    "empty_input": "input",
    "input_too_long": "input",
}


class Unsupported(InvalidArgument):
    """A request field this surface cannot honour: a 400 naming it in ``param``."""

    def __init__(self, param: str, message: str, *, code: str = "unsupported_value") -> None:
        super().__init__(message, code=code)
        self.param = param


def error_type(status: int) -> str:
    if status in TYPES:
        return TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def body(status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def status_of(error: ParleyError) -> int:
    if error.code == "unknown_model":
        return 404
    status = status_for(error)
    return 400 if status == 422 else status


def parley_error_body(error: ParleyError) -> dict[str, Any]:
    """A Parley error as OpenAI's error object."""
    param = getattr(error, "param", None) or PARAMS.get(error.code)
    code = CODES.get(error.code, error.code)
    return body(status_of(error), error.message, code, param)


def parley_error_response(error: ParleyError) -> JSONResponse:
    """A Parley error in OpenAI's shape, with ``Retry-After`` when sending again may work."""
    status = status_of(error)
    headers = {}
    if error.retryable and status != 413:
        headers["Retry-After"] = str(max(1, round(error.retry_after or 1)))
    return JSONResponse(parley_error_body(error), status, headers=headers)


def _param(location: tuple[Any, ...]) -> str:
    """``("body", "messages", 0, "content")`` as ``messages[0].content``."""
    path = ""
    for part in location[1:] if location[:1] == ("body",) else location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    # A path may hold a client's dict key: escape what UTF-8 cannot carry (lone surrogates).
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


def validation_response(error: RequestValidationError) -> JSONResponse:
    """Every problem of a request that failed validation, the first one's field as
    ``param``: a 400, as OpenAI answers malformed input."""
    problems: list[str] = []
    params: list[str] = []
    for item in error.errors():
        param = _param(tuple(item.get("loc", ())))
        params.append(param)
        if item.get("type") == "json_invalid":
            problems.append("the body is not valid JSON")
        else:
            problems.append(f"{param}: {item.get('msg', 'invalid')}")
    first = params[0] if params and params[0] else None
    return JSONResponse(body(400, "; ".join(problems), "invalid_request", first), 400)


def http_error_response(error: HTTPException) -> JSONResponse:
    code = HTTP_CODES.get(error.status_code, "http_error")
    return JSONResponse(
        body(error.status_code, str(error.detail), code),
        error.status_code,
        headers=dict(error.headers or {}),
    )


def error_response(error: Exception) -> JSONResponse:
    """Any exception a route of this surface raised, in OpenAI's shape; an unexpected one is
    logged and answered as a 500 that shows nothing of it."""
    if isinstance(error, ParleyError):
        return parley_error_response(error)
    if isinstance(error, grpc.RpcError):
        return parley_error_response(from_rpc_error(error))
    if isinstance(error, RequestValidationError):
        return validation_response(error)
    if isinstance(error, HTTPException):
        return http_error_response(error)
    log.exception("unhandled error", exc_info=error)
    return parley_error_response(Internal("internal error"))


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class OpenAIRoute(CappedRoute):
    """A route of the OpenAI-compatible surface: its errors, whatever raised them, leave in
    OpenAI's shape; its body is capped like every route's (``MAX_BODY_BYTES``)."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as error:
                return error_response(error)

        return answer

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().handle(scope, receive, send)
        except BodyTooLarge as error:
            # Announced by Content-Length: refused before the handler runs.
            await http_error_response(error)(scope, receive, send)


METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def not_served(request: Request, routes: Iterable[BaseRoute]) -> JSONResponse:
    """The answer to a path under ``/openai/`` that none of ``routes`` serves (404), or to a
    method the route of its path does not (405, ``Allow`` naming those it does)."""
    allowed = [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]
    where = f"{request.method} {request.url.path}"
    if allowed:
        return JSONResponse(
            body(405, f"{where}: method not allowed", "method_not_allowed"),
            405,
            headers={"Allow": ", ".join(allowed)},
        )
    return JSONResponse(body(404, f"Invalid URL ({where})", "not_found"), 404)


class OpenAIErrorBody(BaseModel):
    """What went wrong: a message to show, its kind, the request field at fault, a code."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """Every error of the OpenAI-compatible surface."""

    error: OpenAIErrorBody


_MEANINGS = {
    400: "Malformed input or a parameter this surface does not support (named in param).",
    401: "Missing, malformed or expired credentials.",
    403: "The credentials lack the scope the route needs (named in the message).",
    404: "An unknown model (code model_not_found) or path.",
    413: "The body passes its size limit.",
    429: "A rate limit or quota; Retry-After says when to send again.",
    500: "An internal error; the X-Request-ID header finds it in the logs.",
    502: "The model provider failed or refused the request.",
    503: "An internal service or every provider is down or slow; Retry-After says when.",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route's error ``statuses``, each in OpenAI's shape,
    and ``4XX`` for the rest (a 405); FastAPI would otherwise list a 422 this surface never
    sends."""
    listed: dict[int | str, dict[str, Any]] = {
        status: {"model": OpenAIError, "description": _MEANINGS[status]} for status in statuses
    }
    listed["4XX"] = {
        "model": OpenAIError,
        "description": "Any other client error, such as 405 for a method the path does not serve.",
    }
    return listed

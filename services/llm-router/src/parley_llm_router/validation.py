"""Checks on a chat request before any provider sees it. Pure; raises InvalidArgument."""

from __future__ import annotations

import json
import re

from parley_llm_router.messages import ChatRequest, Role
from parley_llm_router.routing import Route
from parley_runtime.errors import InvalidArgument

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def check_request(request: ChatRequest, route: Route) -> None:
    if not request.messages:
        raise InvalidArgument("messages must not be empty", code="empty_messages")
    for index, message in enumerate(request.messages):
        if message.role == Role.TOOL and not message.tool_call_id:
            raise InvalidArgument(
                f"messages[{index}]: a tool message needs tool_call_id", code="invalid_message"
            )
    if request.max_tokens is not None:
        limit = route.max_output_tokens
        if not 1 <= request.max_tokens <= limit:
            raise InvalidArgument(
                f"max_tokens must be between 1 and {limit} for model {route.alias!r}",
                code="max_tokens_out_of_range",
            )
    if request.temperature is not None and not 0 <= request.temperature <= 2:
        raise InvalidArgument("temperature must be between 0 and 2", code="invalid_temperature")
    names = set()
    for index, tool in enumerate(request.tools):
        path = f"tools[{index}]"
        if not _TOOL_NAME.match(tool.name):
            raise InvalidArgument(
                f"{path}.name must match [a-zA-Z0-9_-]{{1,64}}", code="invalid_tool"
            )
        if tool.name in names:
            raise InvalidArgument(f"{path}.name {tool.name!r} is repeated", code="invalid_tool")
        names.add(tool.name)
        try:
            schema = json.loads(tool.parameters_json or "{}")
        except json.JSONDecodeError as error:
            raise InvalidArgument(
                f"{path}.parameters_json is not JSON: {error.msg} at position {error.pos}",
                code="invalid_tool",
            ) from None
        if not isinstance(schema, dict):
            raise InvalidArgument(
                f"{path}.parameters_json must be a JSON object schema", code="invalid_tool"
            )
        if schema.get("type", "object") != "object":
            raise InvalidArgument(
                f'{path}.parameters_json.type must be "object"', code="invalid_tool"
            )
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise InvalidArgument(
                f"{path}.parameters_json.properties must be an object", code="invalid_tool"
            )
    if (
        request.tool_choice not in ("", "auto", "none", "required")
        and request.tool_choice not in names
    ):
        raise InvalidArgument(
            f"tool_choice {request.tool_choice!r} names no tool of the request", code="invalid_tool"
        )

"""The tools a turn may offer, by name, and the check of a call's arguments against its
tool's JSON Schema (``jsonschema``, Draft 2020-12) before it runs."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

# jsonschema ships no type information.
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

from parley_conversation.conversations import Conversation
from parley_conversation.tools.base import Tool, ToolError, ToolSpec

# Arguments longer than this are refused before they are parsed.
MAX_ARGUMENTS_CHARS = 20_000
MAX_ERROR_CHARS = 300


class ToolRegistry:
    """The tools of this process (see the module docstring); a schema that is not valid
    JSON Schema stops the process at start."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        for tool in tools:
            name = tool.spec.name
            if name in self._tools:
                raise ValueError(f"tool {name!r} is registered twice")
            Draft202012Validator.check_schema(dict(tool.spec.parameters))
            self._tools[name] = tool
            self._validators[name] = Draft202012Validator(dict(tool.spec.parameters))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    def offered(self, conversation: Conversation) -> tuple[ToolSpec, ...]:
        """The specs of the tools a turn of ``conversation`` offers the model."""
        return tuple(t.spec for t in self._tools.values() if t.offered(conversation))

    def prepare(self, name: str, arguments_json: str) -> tuple[Tool, dict[str, Any]]:
        """The tool a call names and its arguments, parsed and valid; ``ToolError``
        ``unknown_tool`` or ``invalid_arguments`` (saying what is wrong) otherwise."""
        tool = self._tools.get(name)
        if tool is None:
            offered = ", ".join(self._tools)
            raise ToolError("unknown_tool", f"there is no tool {name!r}; the tools are {offered}")
        if len(arguments_json) > MAX_ARGUMENTS_CHARS:
            raise ToolError(
                "invalid_arguments", f"the arguments exceed {MAX_ARGUMENTS_CHARS} characters"
            )
        try:
            arguments = json.loads(arguments_json or "{}")
        except json.JSONDecodeError as error:
            raise ToolError(
                "invalid_arguments", f"the arguments are not valid JSON ({error.msg})"
            ) from None
        if not isinstance(arguments, dict):
            raise ToolError("invalid_arguments", "the arguments must be a JSON object")
        wrong = best_match(self._validators[name].iter_errors(arguments))
        if wrong is not None:
            where = "/".join(str(p) for p in wrong.absolute_path)
            # The message may quote the value: keep it short.
            message = str(wrong.message)[:MAX_ERROR_CHARS]
            raise ToolError("invalid_arguments", f"{where}: {message}" if where else message)
        return tool, arguments

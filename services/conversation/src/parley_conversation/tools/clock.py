"""``current_time``: the date and time now in an IANA time zone (``zoneinfo``; the system's
time zone database, which the service's image carries)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from parley_conversation.conversations import Conversation
from parley_conversation.tools.base import ToolContext, ToolError, ToolSpec


class CurrentTime:
    """The ``current_time`` tool, offered to every conversation; ``now`` gives the time (UTC)."""

    spec = ToolSpec(
        name="current_time",
        description=(
            "The current date, time and weekday in a time zone. Use it for anything that "
            "depends on today's date or the time of day."
        ),
        parameters={
            "type": "object",
            "properties": {
                "timezone": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 64,
                    "description": "An IANA time zone such as Europe/Paris; default UTC.",
                }
            },
            "additionalProperties": False,
        },
    )

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._now = now

    def offered(self, conversation: Conversation) -> bool:
        return True

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> str:
        name = str(arguments.get("timezone") or "UTC")
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ToolError(
                "unknown_timezone", f"{name!r} is not an IANA time zone (e.g. Europe/Paris)"
            ) from None
        now = self._now().astimezone(zone)
        return json.dumps(
            {
                "timezone": name,
                "datetime": now.isoformat(timespec="seconds"),
                "weekday": now.strftime("%A"),
                "utc_offset": now.strftime("%z")[:3] + ":" + now.strftime("%z")[3:],
            }
        )

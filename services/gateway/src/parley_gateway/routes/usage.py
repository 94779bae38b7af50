"""Usage and cost reports, from llm-router's usage ledger."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from parley.llm_router.v1 import llm_router_pb2 as llm
from parley_gateway import views
from parley_gateway.adapters import Peers
from parley_gateway.auth import PRINCIPAL_ID_PATTERN, require
from parley_gateway.body_limit import CappedRoute
from parley_gateway.errors import responses
from parley_gateway.limits.http import RATE_LIMITED
from parley_runtime.context import Principal
from parley_runtime.errors import InvalidArgument, PermissionDenied
from parley_runtime.timestamps import to_timestamp

router = APIRouter(
    prefix="/v1", tags=["usage"], route_class=CappedRoute, dependencies=[RATE_LIMITED]
)
EVERYONE = "*"
USAGE_EXAMPLE = {
    "start": "2026-12-01T00:00:00Z",
    "end": "2026-12-04T10:00:00Z",
    "rows": [
        {
            "user_id": "ann",
            "model": "openai/gpt-4o-mini",
            "requests": 42,
            "input_tokens": 18230,
            "output_tokens": 3120,
            "cost_usd": 0.004607,
        }
    ],
    "total": {
        "requests": 42,
        "input_tokens": 18230,
        "output_tokens": 3120,
        "cost_usd": 0.004607,
    },
}


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get(
    "/usage",
    responses={
        200: {"content": {"application/json": {"example": USAGE_EXAMPLE}}},
        **responses(401, 403, 422, 429, 500, 503),
    },
)
async def usage(
    request: Request,
    caller: Annotated[Principal, require("usage")],
    start: Annotated[
        datetime | None,
        Query(
            description="Inclusive start (ISO 8601; UTC when no offset); default: the "
            "start of this month (UTC)."
        ),
    ] = None,
    end: Annotated[
        datetime | None, Query(description="Exclusive end (ISO 8601); default: now.")
    ] = None,
    user_id: Annotated[
        str | None,
        Query(
            pattern=PRINCIPAL_ID_PATTERN,
            description="Whose usage: the caller's by default; another user of the tenant, or "
            "* for every user, needs the admin scope too.",
        ),
    ] = None,
) -> dict[str, Any]:
    """Tokens and cost by user and model over a window, and their total: the requests
    llm-router answered, cached answers included (at no cost)."""
    who = user_id or caller.user_id
    if who != caller.user_id and not caller.has_scope("admin"):
        raise PermissionDenied("another user's usage needs the 'admin' scope", code="missing_scope")
    now = datetime.now(UTC)
    until = _utc(end) if end is not None else now
    since = (
        _utc(start)
        if start is not None
        else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    )
    if until <= since:
        raise InvalidArgument("end: must be after start", code="invalid_window")
    peers: Peers = request.app.state.peers
    found = await peers.llm_router.GetUsage(
        llm.GetUsageRequest(
            user_id="" if who == EVERYONE else who,
            start_time=to_timestamp(since),
            end_time=to_timestamp(until),
        )
    )
    return views.usage_report(found, since, until)

"""The facts Parley remembers about the caller across conversations: list, edit, delete.

Memories are taken from the caller's own messages after a turn, in conversations whose
``settings.memory_enabled`` is on (the default), and recalled into later turns as context.
A caller sees and changes only their own; another user's memory id is a 404 like an unknown
one. Deleting the user's data (``DELETE /v1/me/data``) deletes every memory too.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from parley.conversation.v1 import conversation_pb2 as conv
from parley_gateway import views
from parley_gateway.adapters import Peers
from parley_gateway.auth import require
from parley_gateway.body_limit import CappedRoute
from parley_gateway.errors import responses
from parley_gateway.inputs import PageToken, ResourceId, Text
from parley_gateway.limits.http import RATE_LIMITED
from parley_runtime.context import Principal

router = APIRouter(
    prefix="/v1", tags=["memories"], route_class=CappedRoute, dependencies=[RATE_LIMITED]
)
Reader = Annotated[Principal, require("read")]
Chatter = Annotated[Principal, require("chat")]
MEMORY_EXAMPLE = {
    "id": "mem_5f2a0c1e9b7d4a3c8e6f1b2d3a4c5e6f",
    "content": "The user is vegetarian.",
    "source_message_id": "msg_0193c2a4b5d6e7f8a9b0c1d2",
    "conversation_id": "conv_0193c2a4b5d6e7f8a9b0c1d2",
    "created_at": "2026-12-04T10:00:00.000Z",
    "updated_at": "2026-12-04T10:00:00.000Z",
}


class UpdateMemoryBody(BaseModel):
    """A memory's new text."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"content": "The user is vegan."}]}
    )

    content: Text = Field(min_length=1, max_length=500, description="The fact, as it is kept.")


def _peers(request: Request) -> Peers:
    peers: Peers = request.app.state.peers
    return peers


@router.get(
    "/memories",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {"memories": [MEMORY_EXAMPLE], "next_page_token": None}
                }
            }
        },
        **responses(401, 403, 422, 429, 500, 503),
    },
)
async def list_memories(
    request: Request,
    caller: Reader,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """What Parley remembers about the caller, newest first."""
    page = await _peers(request).conversation.ListMemories(
        conv.ListMemoriesRequest(page_size=page_size, page_token=page_token)
    )
    return {
        "memories": [views.memory(m) for m in page.memories],
        "next_page_token": page.next_page_token or None,
    }


@router.patch(
    "/memories/{memory_id}",
    responses={
        200: {"content": {"application/json": {"example": MEMORY_EXAMPLE}}},
        **responses(400, 401, 403, 404, 413, 422, 429, 500, 503),
    },
)
async def update_memory(
    memory_id: ResourceId, body: UpdateMemoryBody, request: Request, caller: Chatter
) -> dict[str, Any]:
    """Correct what Parley remembers: the memory's text is replaced (and searched as such
    from now on)."""
    updated = await _peers(request).conversation.UpdateMemory(
        conv.UpdateMemoryRequest(memory_id=memory_id, content=body.content)
    )
    return views.memory(updated)


@router.delete(
    "/memories/{memory_id}",
    status_code=204,
    responses=responses(401, 403, 404, 422, 429, 500, 503),
)
async def delete_memory(memory_id: ResourceId, request: Request, caller: Chatter) -> Response:
    """Make Parley forget a memory; it is no longer recalled in any conversation."""
    await _peers(request).conversation.DeleteMemory(conv.DeleteMemoryRequest(memory_id=memory_id))
    return Response(status_code=204)

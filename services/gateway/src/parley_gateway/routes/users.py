"""A user's data as a whole: a downloadable export, and its deletion across every service.

The caller's own data under ``/v1/me``; any user of the caller's tenant under
``/v1/admin/users/{user_id}`` (``admin`` scope). Either way the tenant is the caller's: the
gateway calls each service as that user of that tenant, so no other tenant's data is in
reach.

- **Export** (:func:`export`): a zip archive of JSON files: ``conversations.json`` (every
  conversation with all its messages, superseded answers included, and the user's ratings),
  ``documents.json`` (the records of the documents the user added, not their bytes),
  ``memories.json`` (the facts Parley remembers about the user), ``usage.json`` (tokens and
  cost by model since the first request) and ``manifest.json``.
- **Deletion** (:func:`delete_data`): conversation deletes the user's conversations,
  messages, ratings and memories (with their entries in retrieval's memory index); ingest
  the documents the user added, their chunks in retrieval, their versions and jobs (and the
  user's name on any other job); llm-router the user's rows of the usage ledger; the
  gateway revokes the API keys that act as the user (refused at once on this replica, on
  every replica within ``API_KEY_CACHE_SECONDS``). They run at once; the answer counts what
  each deleted. A failure of any is a 503 and leaves the rest done: deleting again finishes
  the work (and counts only what was left).
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from parley.conversation.v1 import conversation_pb2 as conv
from parley.ingest.v1 import ingest_pb2 as ing
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley_gateway import views
from parley_gateway.adapters import Peers
from parley_gateway.apikeys import ApiKeys
from parley_gateway.auth import PRINCIPAL_ID_PATTERN, require
from parley_gateway.body_limit import CappedRoute
from parley_gateway.errors import responses
from parley_gateway.guardrails import Guardrails
from parley_gateway.limits.http import RATE_LIMITED, route_class
from parley_gateway.settings import Settings
from parley_runtime.context import Principal
from parley_runtime.timestamps import to_timestamp

router = APIRouter(
    prefix="/v1", tags=["users"], route_class=CappedRoute, dependencies=[RATE_LIMITED]
)
Reader = Annotated[Principal, require("read")]
Admin = Annotated[Principal, require("admin")]
UserId = Annotated[
    str, Path(pattern=PRINCIPAL_ID_PATTERN, description="A user of the caller's tenant.")
]
FORMAT = "parley-export/1"
# A user keeps at most conversation's MEMORY_MAX_PER_USER memories; this bounds the reads.
MAX_MEMORY_PAGES = 100
ZIP = {
    "description": "A zip archive: manifest.json, conversations.json, documents.json, "
    "memories.json, usage.json.",
    "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
}
DELETED_EXAMPLE = {
    "user_id": "ann",
    "deleted": {
        "conversations": 3,
        "messages": 12,
        "feedback": 1,
        "memories": 2,
        "documents": 2,
        "ingest_jobs": 2,
        "chunks": 14,
        "usage_records": 5,
    },
}
DELETED = {"content": {"application/json": {"example": DELETED_EXAMPLE}}}


def _peers(request: Request) -> Peers:
    peers: Peers = request.app.state.peers
    return peers


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _as(caller: Principal, user_id: str) -> Principal:
    """The user whose data is in question, in the caller's tenant, with the caller's scopes."""
    return Principal(tenant_id=caller.tenant_id, user_id=user_id, scopes=caller.scopes)


@router.get(
    "/me/export",
    response_class=Response,
    responses={200: ZIP, **responses(401, 403, 429, 500, 503)},
)
async def export_mine(request: Request, caller: Reader) -> Response:
    """Download everything Parley keeps of the caller (see the module docstring)."""
    return await export(request, caller)


@router.get(
    "/admin/users/{user_id}/export",
    response_class=Response,
    responses={200: ZIP, **responses(401, 403, 422, 429, 500, 503)},
)
async def export_user(user_id: UserId, request: Request, caller: Admin) -> Response:
    """Download everything Parley keeps of a user of the caller's tenant."""
    return await export(request, _as(caller, user_id))


@router.delete(
    "/me/data",
    responses={200: DELETED, **responses(401, 403, 429, 500, 503)},
    openapi_extra=route_class("documents"),
)
async def delete_mine(
    request: Request,
    caller: Annotated[Principal, require("chat")],
    editor: Annotated[Principal, require("documents")],
) -> dict[str, Any]:
    """Delete everything Parley keeps of the caller, in every service and store (needs both
    ``chat`` and ``documents``: it deletes what each lets a caller write)."""
    return await delete_data(request, caller)


@router.delete(
    "/admin/users/{user_id}/data",
    responses={200: DELETED, **responses(401, 403, 422, 429, 500, 503)},
    openapi_extra=route_class("documents"),
)
async def delete_user(user_id: UserId, request: Request, caller: Admin) -> dict[str, Any]:
    """Delete everything Parley keeps of a user of the caller's tenant."""
    return await delete_data(request, _as(caller, user_id))


async def export(request: Request, who: Principal) -> Response:
    """The archive of ``who``'s data."""
    peers, metadata = _peers(request), who.to_metadata()
    timeout = _settings(request).stream_timeout_seconds  # a user's whole history
    now = datetime.now(UTC)

    async def conversations() -> list[conv.ExportedConversation]:
        call = peers.conversation.ExportUserData(
            conv.ExportUserDataRequest(), metadata=metadata, timeout=timeout
        )
        return [item async for item in call]

    async def documents() -> list[ing.Document]:
        call = peers.ingest.ExportUserData(
            ing.ExportUserDataRequest(), metadata=metadata, timeout=timeout
        )
        return [item async for item in call]

    async def memories() -> list[conv.Memory]:
        found: list[conv.Memory] = []
        token = ""
        for _ in range(MAX_MEMORY_PAGES):
            page = await peers.conversation.ListMemories(
                conv.ListMemoriesRequest(page_size=100, page_token=token),
                metadata=metadata,
                timeout=timeout,
            )
            found.extend(page.memories)
            token = page.next_page_token
            if not token:
                break
        return found

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    usage_request = llm.GetUsageRequest(
        user_id=who.user_id, start_time=to_timestamp(epoch), end_time=to_timestamp(now)
    )
    exported, added, remembered, used = await asyncio.gather(
        conversations(),
        documents(),
        memories(),
        peers.llm_router.GetUsage(usage_request, metadata=metadata, timeout=timeout),
    )
    guardrails: Guardrails = request.app.state.guardrails
    files = {
        "conversations.json": [
            {
                "conversation": views.conversation(item.conversation),
                "messages": [
                    guardrails.shown(who.tenant_id, views.message(m)) for m in item.messages
                ],
                "feedback": [views.feedback(f) for f in item.feedback],
            }
            for item in exported
        ],
        "documents.json": [views.document(d) for d in added],
        "memories.json": [views.memory(m) for m in remembered],
        "usage.json": views.usage_report(used, epoch, now),
    }
    files["manifest.json"] = {
        "format": FORMAT,
        "tenant_id": who.tenant_id,
        "user_id": who.user_id,
        "exported_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "counts": {
            "conversations": len(exported),
            "messages": sum(len(item.messages) for item in exported),
            "feedback": sum(len(item.feedback) for item in exported),
            "documents": len(added),
            "memories": len(remembered),
            "usage_rows": len(used.rows),
        },
    }
    archive = await asyncio.to_thread(_zipped, files, now)
    name = f"parley-export-{now:%Y%m%dT%H%M%SZ}.zip"
    return Response(
        archive,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _zipped(files: dict[str, Any], at: datetime) -> bytes:
    """The zip archive of ``files``, each as indented JSON (compressing is CPU work: this
    runs in a worker thread)."""
    out = io.BytesIO()
    stamp = at.timetuple()[:6]
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in (
            "manifest.json",
            "conversations.json",
            "documents.json",
            "memories.json",
            "usage.json",
        ):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, json.dumps(files[name], indent=2, ensure_ascii=False))
    return out.getvalue()


async def delete_data(request: Request, who: Principal) -> dict[str, Any]:
    """Delete ``who``'s data in every service at once (see the module docstring)."""
    peers, metadata = _peers(request), who.to_metadata()
    timeout = _settings(request).stream_timeout_seconds  # a document's chunks each
    outcomes = await asyncio.gather(
        peers.conversation.DeleteUserData(
            conv.DeleteUserDataRequest(), metadata=metadata, timeout=timeout
        ),
        peers.ingest.DeleteUserData(
            ing.DeleteUserDataRequest(), metadata=metadata, timeout=timeout
        ),
        peers.llm_router.DeleteUserUsage(
            llm.DeleteUserUsageRequest(), metadata=metadata, timeout=timeout
        ),
        _revoke_keys(request, who),
        return_exceptions=True,  # each runs to its end; the first failure is the answer
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    conversations: conv.DeleteUserDataResponse = outcomes[0]  # type: ignore[assignment]
    documents: ing.DeleteUserDataResponse = outcomes[1]  # type: ignore[assignment]
    usage: llm.DeleteUserUsageResponse = outcomes[2]  # type: ignore[assignment]
    keys_revoked: int = outcomes[3]  # type: ignore[assignment]
    return {
        "user_id": who.user_id,
        "deleted": {
            "conversations": conversations.conversations_deleted,
            "messages": conversations.messages_deleted,
            "feedback": conversations.feedback_deleted,
            "memories": conversations.memories_deleted,
            "documents": documents.documents_deleted,
            "ingest_jobs": documents.jobs_deleted,
            "chunks": documents.chunks_deleted,
            "usage_records": usage.records_deleted,
            "api_keys_revoked": keys_revoked,
        },
    }


async def _revoke_keys(request: Request, who: Principal) -> int:
    """Revoke the API keys that act as ``who``; how many were live."""
    keys: ApiKeys = request.app.state.identity.keys
    prefixes = await keys.store.revoke_user(who.tenant_id, who.user_id)
    for prefix in prefixes:
        keys.forget(prefix)
    return len(prefixes)

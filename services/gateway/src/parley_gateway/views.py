"""The public JSON shapes of Parley's resources, rendered from the internal protobufs.

The public API is versioned on its own: these functions, not the proto field names, define
what clients see. Every proto enum becomes its public string here, through one table per enum
(an unknown value, from a newer peer, renders as ``"unknown"``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from parley.common.v1 import common_pb2
from parley.conversation.v1 import conversation_pb2 as conv
from parley.ingest.v1 import ingest_pb2 as ing
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley_runtime.errors import ParleyError

_FINISH_REASON = {
    common_pb2.FINISH_REASON_UNSPECIFIED: "",
    common_pb2.FINISH_REASON_STOP: "stop",
    common_pb2.FINISH_REASON_LENGTH: "length",
    common_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    common_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    common_pb2.FINISH_REASON_ERROR: "error",
    common_pb2.FINISH_REASON_CANCELLED: "cancelled",
}
_ROLE = {conv.MESSAGE_ROLE_USER: "user", conv.MESSAGE_ROLE_ASSISTANT: "assistant"}
_STATUS = {
    conv.MESSAGE_STATUS_IN_PROGRESS: "in_progress",
    conv.MESSAGE_STATUS_COMPLETE: "complete",
    conv.MESSAGE_STATUS_CANCELLED: "cancelled",
    conv.MESSAGE_STATUS_FAILED: "failed",
}
_DOC_STATUS = {
    ing.DOCUMENT_STATUS_PENDING: "pending",
    ing.DOCUMENT_STATUS_PROCESSING: "processing",
    ing.DOCUMENT_STATUS_READY: "ready",
    ing.DOCUMENT_STATUS_FAILED: "failed",
}
_JOB_STATE = {
    ing.JOB_STATE_QUEUED: "queued",
    ing.JOB_STATE_RUNNING: "running",
    ing.JOB_STATE_SUCCEEDED: "succeeded",
    ing.JOB_STATE_FAILED: "failed",
}


def timestamp(value: Timestamp) -> str | None:
    if not value.seconds and not value.nanos:
        return None
    return value.ToDatetime().isoformat(timespec="milliseconds") + "Z"


def usage(value: common_pb2.Usage) -> dict[str, Any]:
    return {
        "input_tokens": value.input_tokens,
        "output_tokens": value.output_tokens,
        "cost_usd": value.cost_usd,
        "estimated": value.estimated,
    }


def citation(value: common_pb2.Citation) -> dict[str, Any]:
    return {
        "marker": value.marker,
        "document_id": value.document_id,
        "chunk_id": value.chunk_id,
        "title": value.title,
        "source_uri": value.source_uri,
        "snippet": value.snippet,
        "score": round(value.score, 4),
        "page": value.page or None,
    }


def conversation(value: conv.Conversation) -> dict[str, Any]:
    settings = value.settings
    return {
        "id": value.id,
        "title": value.title,
        "settings": {
            "model": settings.model or None,
            "knowledge_base_id": settings.knowledge_base_id or None,
            "temperature": settings.temperature if settings.HasField("temperature") else None,
            "memory_enabled": (
                settings.memory_enabled if settings.HasField("memory_enabled") else True
            ),
        },
        "message_count": value.message_count,
        "created_at": timestamp(value.create_time),
        "updated_at": timestamp(value.update_time),
    }


def memory(value: conv.Memory) -> dict[str, Any]:
    return {
        "id": value.id,
        "content": value.content,
        "source_message_id": value.source_message_id or None,
        "conversation_id": value.conversation_id or None,
        "created_at": timestamp(value.create_time),
        "updated_at": timestamp(value.update_time),
    }


def message(value: conv.Message) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": value.id,
        "conversation_id": value.conversation_id,
        "role": _ROLE.get(value.role, "unknown"),
        "content": value.content,
        "status": _STATUS.get(value.status, "unknown"),
        "created_at": timestamp(value.create_time),
    }
    if value.role == conv.MESSAGE_ROLE_ASSISTANT:
        out |= {
            "model": value.model or None,
            "usage": usage(value.usage),
            "finish_reason": _FINISH_REASON.get(value.finish_reason, "unknown") or None,
            "citations": [citation(c) for c in value.citations],
            "error_code": value.error_code or None,
            "tool_activity": [tool_activity(t) for t in value.tool_activity],
            # The query its passages were searched with (a follow-up made standalone).
            "search_query": value.search_query or None,
        }
    return out


def tool_activity(value: conv.ToolActivity) -> dict[str, Any]:
    return {
        "call_id": value.call_id,
        "name": value.name,
        "arguments": value.arguments_json,
        "result": value.result,
        "is_error": value.is_error,
        "error_code": value.error_code or None,
        "step": value.step,
    }


def turn_events(
    event: conv.TurnEvent, request_id: str | None
) -> tuple[tuple[str, dict[str, Any]], ...]:
    """The SSE events (name and JSON data) of one turn event: a ``done`` that carries the
    turn's usage (``TurnDone.usage``) is ``usage`` then ``done``, as when the usage came in
    an event of its own."""
    if event.WhichOneof("event") == "done" and event.done.HasField("usage"):
        return ("usage", usage(event.done.usage)), turn_event(event, request_id)
    return (turn_event(event, request_id),)


def turn_event(event: conv.TurnEvent, request_id: str | None) -> tuple[str, dict[str, Any]]:
    """The SSE event name and JSON data of one turn event."""
    kind = event.WhichOneof("event")
    # Deltas first: nearly every event of a turn is one.
    if kind == "delta":
        return "delta", {"text": event.delta.text}
    if kind == "accepted":
        a = event.accepted
        return "accepted", {
            "user_message_id": a.user_message_id,
            "assistant_message_id": a.assistant_message_id,
            "replayed": a.replayed,
        }
    if kind == "citations":
        return "citations", {"citations": [citation(c) for c in event.citations.citations]}
    if kind == "tool_call":
        t = event.tool_call
        return "tool_call", {"call_id": t.call_id, "name": t.name, "arguments": t.arguments_json}
    if kind == "tool_result":
        r = event.tool_result
        return "tool_result", {
            "call_id": r.call_id,
            "name": r.name,
            "result": r.result,
            "is_error": r.is_error,
            "error_code": r.error_code or None,
        }
    if kind == "usage":
        return "usage", usage(event.usage.usage)
    if kind == "done":
        return "done", {"message": message(event.done.message)}
    if kind == "error":
        e = event.error
        return "error", {
            "code": e.error.code,
            "message": e.error.message,
            "retryable": e.error.retryable,
            "request_id": request_id,
            "assistant_message_id": e.assistant_message_id or None,
        }
    return "unknown", {}


def turn_failure(error: ParleyError, request_id: str | None) -> dict[str, Any]:
    """The data of the ``error`` event the gateway ends a turn with when its stream fails."""
    return {
        "code": error.code,
        "message": error.message,
        "retryable": error.retryable,
        "request_id": request_id,
    }


def job(value: ing.Job) -> dict[str, Any]:
    return {
        "id": value.id,
        "document_id": value.document_id,
        "state": _JOB_STATE.get(value.state, "unknown"),
        "stage": value.stage,
        "progress": round(value.progress, 3),
        "chunks_total": value.chunks_total,
        "chunks_indexed": value.chunks_indexed,
        "error": value.error or None,
        "created_at": timestamp(value.create_time),
        "updated_at": timestamp(value.update_time),
    }


def document(value: ing.Document) -> dict[str, Any]:
    return {
        "id": value.id,
        "knowledge_base_id": value.knowledge_base_id,
        "title": value.title,
        "filename": value.filename or None,
        "content_type": value.content_type,
        "size_bytes": value.size_bytes,
        "sha256": value.sha256,
        "version": value.version,
        "status": _DOC_STATUS.get(value.status, "unknown"),
        "chunk_count": value.chunk_count,
        "metadata": dict(value.metadata),
        "external_id": value.external_id or None,
        "job_id": value.job_id or None,
        "error": value.error or None,
        "created_at": timestamp(value.create_time),
        "updated_at": timestamp(value.update_time),
    }


def knowledge_base(value: ing.KnowledgeBase) -> dict[str, Any]:
    return {
        "id": value.id,
        "document_count": value.document_count,
        "documents_by_status": {
            "pending": value.pending_count,
            "processing": value.processing_count,
            "ready": value.ready_count,
            "failed": value.failed_count,
        },
        "updated_at": timestamp(value.update_time),
    }


def reindexed(value: ing.ReindexDocumentsResponse) -> dict[str, Any]:
    return {
        "queued": value.queued,
        "documents": [
            {"document_id": d.document_id, "version": d.version, "job_id": d.job_id}
            for d in value.documents
        ],
    }


_RATING = {conv.RATING_UP: "up", conv.RATING_DOWN: "down"}
RATINGS = {public: value for value, public in _RATING.items()}


def feedback(value: conv.Feedback) -> dict[str, Any]:
    return {
        "message_id": value.message_id,
        "rating": _RATING.get(value.rating, "unknown"),
        "comment": value.comment,
        "created_at": timestamp(value.create_time),
    }


def stored_ending(value: conv.Message, request_id: str | None) -> list[tuple[str, dict[str, Any]]]:
    """The events that end a stream reading a stored answer that has ended: ``usage`` and
    ``done``, or the ``error`` its status and code tell (not retryable: reading it again reads
    the same ending)."""
    if value.status == conv.MESSAGE_STATUS_COMPLETE:
        return [("usage", usage(value.usage)), ("done", {"message": message(value)})]
    status = _STATUS.get(value.status, "unknown")
    return [
        (
            "error",
            {
                "code": value.error_code or status,
                "message": f"the answer ended {status}; the text it had is kept",
                "retryable": False,
                "request_id": request_id,
                "assistant_message_id": value.id,
            },
        )
    ]


def scored_chunk(value: ret.ScoredChunk) -> dict[str, Any]:
    return {
        "chunk_id": value.chunk_id,
        "document_id": value.document_id,
        "title": value.title,
        "source_uri": value.source_uri or None,
        "position": value.position,
        "text": value.text,
        "score": round(value.score, 4),
        "metadata": dict(value.metadata),
    }


def usage_report(value: llm.GetUsageResponse, start: datetime, end: datetime) -> dict[str, Any]:
    """Usage rows by user and model over ``[start, end)``, and their total."""
    rows = [
        {
            "user_id": row.user_id,
            "model": row.model,
            "requests": row.requests,
            "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens,
            "cost_usd": round(row.cost_usd, 6),
        }
        for row in value.rows
    ]
    total = {
        "requests": sum(row.requests for row in value.rows),
        "input_tokens": sum(row.input_tokens for row in value.rows),
        "output_tokens": sum(row.output_tokens for row in value.rows),
    }
    return {
        "start": start.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "end": end.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "rows": rows,
        "total": {**total, "cost_usd": round(sum(row.cost_usd for row in value.rows), 6)},
    }

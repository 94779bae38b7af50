"""The ConversationService gRPC servicer: validates, reads the caller's principal once and
passes it down, translates through ``wire``; no logic of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import datetime
from typing import Any

import grpc

from parley.conversation.v1 import conversation_pb2 as pb
from parley.conversation.v1 import conversation_pb2_grpc as pb_grpc
from parley_conversation import wire
from parley_conversation.adapters.llm_router import LlmRouter
from parley_conversation.adapters.store import ConversationStore
from parley_conversation.memory import Memories
from parley_conversation.settings import Settings
from parley_conversation.turn import TurnRunner
from parley_runtime.context import current_principal
from parley_runtime.errors import InvalidArgument
from parley_runtime.pagination import decode_cursor, encode_cursor, page_size
from parley_runtime.timestamps import aware

MAX_TITLE = 200
MAX_COMMENT = 2000
UPDATABLE = {
    "title",
    "settings.model",
    "settings.knowledge_base_id",
    "settings.temperature",
    "settings.memory_enabled",
}


def _check_settings(settings: pb.ConversationSettings) -> None:
    if len(settings.model) > 100:
        raise InvalidArgument("settings.model: at most 100 characters", code="invalid_settings")
    if len(settings.knowledge_base_id) > 200:
        raise InvalidArgument(
            "settings.knowledge_base_id: at most 200 characters", code="invalid_settings"
        )
    if settings.HasField("temperature") and not 0 <= settings.temperature <= 2:
        raise InvalidArgument(
            "settings.temperature: must be between 0 and 2", code="invalid_settings"
        )


class ConversationServicer(pb_grpc.ConversationServiceServicer):
    """Conversations and turns of the calling principal's user."""

    def __init__(
        self,
        store: ConversationStore,
        turns: TurnRunner,
        router: LlmRouter,
        settings: Settings,
        *,
        memories: Memories,
    ) -> None:
        self.store = store
        self.turns = turns
        self.router = router
        self.settings = settings
        self.memories = memories

    async def CreateConversation(
        self, request: pb.CreateConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Conversation:
        """Start an empty conversation."""
        if len(request.title) > MAX_TITLE:
            raise InvalidArgument(f"title: at most {MAX_TITLE} characters", code="invalid_title")
        _check_settings(request.settings)
        if request.settings.model:
            await self.router.check_model(request.settings.model)
        who = current_principal()
        s = request.settings
        created = await self.store.create(
            who,
            request.title,
            s.model,
            s.knowledge_base_id,
            s.temperature if s.HasField("temperature") else None,
            memory_enabled=s.memory_enabled if s.HasField("memory_enabled") else True,
        )
        return wire.conversation(created)

    async def GetConversation(
        self, request: pb.GetConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Conversation:
        """Read one of the caller's conversations."""
        who = current_principal()
        return wire.conversation(await self.store.get(who, request.conversation_id))

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConversationsResponse:
        """The caller's conversations, most recently updated first."""
        who = current_principal()
        size = page_size(request.page_size, 20, 100)
        after = None
        if request.page_token:
            at, cid = decode_cursor(request.page_token, 2)
            after = (aware(datetime.fromisoformat(at)), str(cid))
        found = await self.store.list_for(who, size + 1, after)
        token = ""
        if len(found) > size:
            found = found[:size]
            token = encode_cursor(aware(found[-1].updated_at).isoformat(), found[-1].id)
        return pb.ListConversationsResponse(
            conversations=[wire.conversation(c) for c in found], next_page_token=token
        )

    async def UpdateConversation(
        self, request: pb.UpdateConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Conversation:
        """Change the title or settings named by the update mask."""
        paths = set(request.update_mask.paths)
        if not paths:
            raise InvalidArgument("update_mask: name at least one field", code="empty_update")
        unknown = paths - UPDATABLE
        if unknown:
            raise InvalidArgument(
                f"update_mask: cannot update {', '.join(sorted(unknown))}",
                code="invalid_update_mask",
            )
        if len(request.title) > MAX_TITLE:
            raise InvalidArgument(f"title: at most {MAX_TITLE} characters", code="invalid_title")
        _check_settings(request.settings)
        who = current_principal()
        s = request.settings
        changes: dict[str, Any] = {}
        if "title" in paths:
            changes["title"] = request.title
        if "settings.model" in paths:
            if s.model:
                await self.router.check_model(s.model)
            changes["model"] = s.model
        if "settings.knowledge_base_id" in paths:
            changes["knowledge_base_id"] = s.knowledge_base_id
        if "settings.temperature" in paths:
            changes["temperature"] = s.temperature if s.HasField("temperature") else None
        if "settings.memory_enabled" in paths:
            changes["memory_enabled"] = s.memory_enabled if s.HasField("memory_enabled") else True
        updated = await self.store.update(who, request.conversation_id, changes)
        return wire.conversation(updated)

    async def DeleteConversation(
        self, request: pb.DeleteConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteConversationResponse:
        """Delete a conversation with its messages and feedback."""
        who = current_principal()
        await self.store.delete(who, request.conversation_id)
        return pb.DeleteConversationResponse()

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMessagesResponse:
        """A conversation's messages, oldest first."""
        who = current_principal()
        size = page_size(request.page_size, 50, 200)
        after = int(decode_cursor(request.page_token, 1)[0]) if request.page_token else 0
        found = await self.store.messages(who, request.conversation_id, size + 1, after)
        token = ""
        if len(found) > size:
            found = found[:size]
            token = encode_cursor(found[-1].seq)
        return pb.ListMessagesResponse(
            messages=[wire.message(m) for m in found], next_page_token=token
        )

    async def GetMessage(
        self, request: pb.GetMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.Message:
        """One message of the caller's conversation; an answer in progress carries the text
        saved so far."""
        who = current_principal()
        found = await self.store.message(who, request.conversation_id, request.message_id)
        return wire.message(found)

    async def CancelAnswer(
        self, request: pb.CancelAnswerRequest, context: grpc.aio.ServicerContext
    ) -> pb.Message:
        """Stop an answer in progress, whichever replica writes it; the message once it has
        ended, or as it stands when the wait runs out (see turn.py)."""
        who = current_principal()
        stopped = await self.turns.cancel(who, request.conversation_id, request.message_id)
        return wire.message(stopped)

    async def SendMessage(
        self, request: pb.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TurnEvent]:
        """Store the user message and stream the answer (see turn.py for the events); a turn
        that cannot start (unknown model, llm-router down, key reused) stores nothing."""
        content = request.content
        if not content.strip():
            raise InvalidArgument("content: must not be empty", code="empty_message")
        limit = self.settings.max_message_chars
        if len(content) > limit:
            raise InvalidArgument(f"content: at most {limit} characters", code="message_too_long")
        if len(request.idempotency_key) > 200:
            raise InvalidArgument(
                "idempotency_key: at most 200 characters", code="invalid_idempotency_key"
            )
        if len(request.model) > 100:
            raise InvalidArgument("model: at most 100 characters", code="invalid_model")
        who = current_principal()
        start = await self.turns.begin(
            who, request.conversation_id, content, request.idempotency_key or None, request.model
        )
        async with (
            aclosing(self.turns.run(start, request.model)) as events,
            aclosing(wire.turn_events(events, request.usage_with_done)) as messages,
        ):
            async for message in messages:
                yield message

    async def RegenerateMessage(
        self, request: pb.RegenerateMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TurnEvent]:
        """Answer the last user message again; the previous answer is superseded (kept in
        exports, left out of the conversation and of later prompts)."""
        if len(request.model) > 100:
            raise InvalidArgument("model: at most 100 characters", code="invalid_model")
        who = current_principal()
        start = await self.turns.begin_regeneration(who, request.conversation_id, request.model)
        async with (
            aclosing(self.turns.run(start, request.model)) as events,
            aclosing(wire.turn_events(events, request.usage_with_done)) as messages,
        ):
            async for message in messages:
                yield message

    async def SubmitFeedback(
        self, request: pb.SubmitFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.Feedback:
        """Rate an assistant message; a new rating replaces the caller's earlier one."""
        rating = wire.rating(request.rating)
        if rating is None:
            raise InvalidArgument("rating: must be RATING_UP or RATING_DOWN", code="invalid_rating")
        if len(request.comment) > MAX_COMMENT:
            raise InvalidArgument(
                f"comment: at most {MAX_COMMENT} characters", code="invalid_comment"
            )
        who = current_principal()
        stored = await self.store.feedback(
            who, request.conversation_id, request.message_id, rating, request.comment
        )
        return wire.feedback(stored)

    async def ExportUserData(
        self, request: pb.ExportUserDataRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExportedConversation]:
        """Every conversation, message and rating of the caller's user."""
        who = current_principal()
        for conversation, messages, feedback in await self.store.export(who):
            yield pb.ExportedConversation(
                conversation=wire.conversation(conversation),
                messages=[wire.message(m) for m in messages],
                feedback=[wire.feedback(f) for f in feedback],
            )

    async def DeleteUserData(
        self, request: pb.DeleteUserDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteUserDataResponse:
        """Delete everything of the caller's user, memories (and their index entries)
        first: when retrieval cannot answer, nothing is deleted and the call can be made
        again."""
        who = current_principal()
        memories = await self.memories.delete_all(who)
        conversations, messages, feedback = await self.store.delete_user(who)
        return pb.DeleteUserDataResponse(
            conversations_deleted=conversations,
            messages_deleted=messages,
            feedback_deleted=feedback,
            memories_deleted=memories,
        )

    async def ListMemories(
        self, request: pb.ListMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMemoriesResponse:
        """The facts remembered about the caller's user, newest first."""
        who = current_principal()
        size = page_size(request.page_size, 20, 100)
        after = None
        if request.page_token:
            at, memory_id = decode_cursor(request.page_token, 2)
            after = (aware(datetime.fromisoformat(at)), str(memory_id))
        found = await self.memories.page(who, size + 1, after)
        token = ""
        if len(found) > size:
            found = found[:size]
            token = encode_cursor(aware(found[-1].created_at).isoformat(), found[-1].id)
        return pb.ListMemoriesResponse(
            memories=[wire.memory(m) for m in found], next_page_token=token
        )

    async def UpdateMemory(
        self, request: pb.UpdateMemoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.Memory:
        """Replace the text of one of the caller's memories (re-indexed)."""
        who = current_principal()
        updated = await self.memories.update(who, request.memory_id, request.content)
        return wire.memory(updated)

    async def DeleteMemory(
        self, request: pb.DeleteMemoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteMemoryResponse:
        """Forget one of the caller's memories, its index entry with it."""
        who = current_principal()
        await self.memories.delete(who, request.memory_id)
        return pb.DeleteMemoryResponse()

"""The conversation service's channel: conversations, their messages and the streamed turn."""

from __future__ import annotations

import grpc

from parley_runtime.grpc_client import channel

SERVICE = "parley.conversation.v1.ConversationService"
# Reads only: a write retried after a lost reply could be applied twice.
IDEMPOTENT_METHODS = (
    "GetConversation",
    "ListConversations",
    "ListMessages",
    "GetMessage",
    "ListMemories",
)


def open_channel(address: str, timeout: float) -> grpc.aio.Channel:
    """A channel to conversation at ``address``; ``timeout`` is the deadline of unary calls."""
    return channel(address, SERVICE, idempotent_methods=IDEMPOTENT_METHODS, default_timeout=timeout)

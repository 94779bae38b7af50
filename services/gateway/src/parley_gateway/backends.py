"""gRPC stubs of the services the gateway calls, on channels built once per process."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from parley.conversation.v1 import conversation_pb2_grpc
from parley.ingest.v1 import ingest_pb2_grpc
from parley.llm_router.v1 import llm_router_pb2_grpc
from parley_gateway.settings import Settings
from parley_runtime.grpc_client import channel


@dataclass
class Backends:
    conversation: conversation_pb2_grpc.ConversationServiceStub
    ingest: ingest_pb2_grpc.IngestStub
    router: llm_router_pb2_grpc.LlmRouterStub
    channels: list[grpc.aio.Channel]

    async def close(self) -> None:
        for chan in self.channels:
            await chan.close()


def connect(settings: Settings) -> Backends:
    timeout = settings.request_timeout_seconds
    conversation = channel(
        settings.conversation_addr,
        "parley.conversation.v1.ConversationService",
        idempotent_methods=["GetConversation", "ListConversations", "ListMessages"],
        default_timeout=timeout,
    )
    ingest = channel(
        settings.ingest_addr,
        "parley.ingest.v1.Ingest",
        idempotent_methods=["GetDocument", "ListDocuments", "GetJob"],
        default_timeout=timeout,
    )
    router = channel(
        settings.llm_router_addr,
        "parley.llm_router.v1.LlmRouter",
        idempotent_methods=["ListModels", "CountTokens"],
        default_timeout=timeout,
    )
    return Backends(
        conversation=conversation_pb2_grpc.ConversationServiceStub(conversation),
        ingest=ingest_pb2_grpc.IngestStub(ingest),
        router=llm_router_pb2_grpc.LlmRouterStub(router),
        channels=[conversation, ingest, router],
    )

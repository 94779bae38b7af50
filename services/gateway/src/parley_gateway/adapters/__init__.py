"""The gRPC peers the gateway calls, one module each, and the bundle of their clients.

The gateway calls conversation, ingest and llm-router, which ``/readyz`` checks, and
retrieval for search, which it does not (a chat turn goes on without it); each channel is
opened once per process and closed with the app.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from parley.conversation.v1 import conversation_pb2_grpc
from parley.ingest.v1 import ingest_pb2_grpc
from parley.llm_router.v1 import llm_router_pb2_grpc
from parley.retrieval.v1 import retrieval_pb2_grpc
from parley_gateway.adapters import conversation, ingest, llm_router, retrieval
from parley_gateway.settings import Settings


@dataclass
class Peers:
    """The clients of every peer, and the channels ``/readyz`` checks by peer name; the
    retrieval channel is apart (``others``)."""

    conversation: conversation_pb2_grpc.ConversationServiceStub
    ingest: ingest_pb2_grpc.IngestStub
    llm_router: llm_router_pb2_grpc.LlmRouterStub
    channels: dict[str, grpc.aio.Channel]
    retrieval: retrieval_pb2_grpc.RetrievalStub
    others: tuple[grpc.aio.Channel, ...] = ()

    async def close(self) -> None:
        """Close every channel; calls still in flight are cancelled."""
        for chan in (*self.channels.values(), *self.others):
            await chan.close()


def connect(settings: Settings) -> Peers:
    """Open a channel to each peer named in ``settings``."""
    timeout = settings.request_timeout_seconds
    channels = {
        "conversation": conversation.open_channel(settings.conversation_addr, timeout),
        "ingest": ingest.open_channel(settings.ingest_addr, timeout),
        "llm-router": llm_router.open_channel(settings.llm_router_addr, timeout),
    }
    search = retrieval.open_channel(settings.retrieval_addr, timeout)
    return Peers(
        conversation=conversation_pb2_grpc.ConversationServiceStub(channels["conversation"]),
        ingest=ingest_pb2_grpc.IngestStub(channels["ingest"]),
        llm_router=llm_router_pb2_grpc.LlmRouterStub(channels["llm-router"]),
        channels=channels,
        retrieval=retrieval_pb2_grpc.RetrievalStub(search),
        others=(search,),
    )

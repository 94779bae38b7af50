"""gRPC clients of the services a turn calls: llm-router and retrieval."""

from __future__ import annotations

import logging

import grpc

from parley.llm_router.v1 import llm_router_pb2 as llm
from parley.llm_router.v1 import llm_router_pb2_grpc as llm_grpc
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_conversation.prompt import Passage
from parley_runtime.grpc_client import channel

log = logging.getLogger("parley.conversation")


class Peers:
    """Channels to llm-router and retrieval, opened once per process."""

    def __init__(self, router_addr: str, retrieval_addr: str, retrieval_timeout: float) -> None:
        self._router_channel = channel(
            router_addr,
            "parley.llm_router.v1.LlmRouter",
            idempotent_methods=["CountTokens", "ListModels"],
            default_timeout=300.0,
        )
        self._retrieval_channel = channel(
            retrieval_addr,
            "parley.retrieval.v1.Retrieval",
            idempotent_methods=["Search", "GetCollectionStats"],
            default_timeout=retrieval_timeout,
        )
        self.router = llm_grpc.LlmRouterStub(self._router_channel)
        self.retrieval = ret_grpc.RetrievalStub(self._retrieval_channel)

    def stream_chat(self, request: llm.ChatRequest, timeout: float) -> grpc.aio.UnaryStreamCall:
        return self.router.StreamChat(request, timeout=timeout)

    async def search(self, knowledge_base_id: str, query: str, top_k: int) -> list[Passage]:
        """Passages for ``query``; an unavailable retrieval degrades to none, with a log line."""
        try:
            found = await self.retrieval.Search(
                ret.SearchRequest(knowledge_base_id=knowledge_base_id, query=query, top_k=top_k)
            )
        except grpc.RpcError as error:
            log.warning(
                "retrieval failed; answering without documents",
                extra={"knowledge_base_id": knowledge_base_id, "status": str(error.code())},
            )
            return []
        return [
            Passage(c.document_id, c.chunk_id, c.title, c.source_uri, c.text, c.score)
            for c in found.chunks
        ]

    async def close(self) -> None:
        await self._router_channel.close()
        await self._retrieval_channel.close()

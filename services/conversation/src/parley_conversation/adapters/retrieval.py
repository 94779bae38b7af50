"""retrieval, as a turn calls it: the passages of a knowledge base for a question."""

from __future__ import annotations

import logging

import grpc

from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_conversation import wire
from parley_conversation.conversations import Passage
from parley_runtime.grpc_client import channel

log = logging.getLogger("parley.conversation")


class Retrieval:
    """A channel to retrieval, opened once per process."""

    def __init__(self, address: str, timeout: float) -> None:
        self._channel = channel(
            address,
            "parley.retrieval.v1.Retrieval",
            idempotent_methods=["Search", "GetCollectionStats"],
            default_timeout=timeout,
        )
        self._stub = ret_grpc.RetrievalStub(self._channel)

    async def search(self, knowledge_base_id: str, query: str, top_k: int) -> list[Passage]:
        """Passages for ``query``, best first; an unavailable retrieval degrades to none, with a
        log line."""
        try:
            found = await self._stub.Search(wire.search_request(knowledge_base_id, query, top_k))
        except grpc.RpcError as error:
            log.warning(
                "retrieval failed; answering without documents",
                extra={"knowledge_base_id": knowledge_base_id, "status": str(error.code())},
            )
            return []
        return [wire.passage(chunk) for chunk in found.chunks]

    async def close(self) -> None:
        await self._channel.close()

"""retrieval, as a turn calls it: the passages of a knowledge base for a question."""

from __future__ import annotations

import logging

import grpc

from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_conversation import wire
from parley_conversation.conversations import Passage
from parley_runtime.grpc_client import channel

log = logging.getLogger("parley.conversation")


_MODES = {
    "dense": ret.SEARCH_MODE_DENSE,
    "sparse": ret.SEARCH_MODE_SPARSE,
    "hybrid": ret.SEARCH_MODE_HYBRID,
}


class Retrieval:
    """A channel to retrieval, opened once per process. Every search asks for ``mode`` and,
    when one is set, drops passages less similar to the question than ``score_threshold``."""

    def __init__(
        self,
        address: str,
        timeout: float,
        *,
        mode: str = "hybrid",
        score_threshold: float | None = None,
    ) -> None:
        self._mode = _MODES[mode]
        self._score_threshold = score_threshold
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
        request = wire.search_request(knowledge_base_id, query, top_k)
        request.mode = self._mode
        if self._score_threshold is not None:
            request.score_threshold = self._score_threshold
        try:
            found = await self._stub.Search(request)
        except grpc.RpcError as error:
            log.warning(
                "retrieval failed; answering without documents",
                extra={"knowledge_base_id": knowledge_base_id, "status": str(error.code())},
            )
            return []
        return [wire.passage(chunk) for chunk in found.chunks]

    async def close(self) -> None:
        await self._channel.close()

"""retrieval, as conversation calls it: the passages of a knowledge base for a question, and
the index of users' memories (``RetrievalMemories``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_conversation import wire
from parley_conversation.conversations import Passage
from parley_conversation.memory import Memory
from parley_runtime.context import Principal
from parley_runtime.errors import from_rpc_error
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


class RetrievalMemories:
    """:class:`~parley_conversation.memory.MemoryIndex` on retrieval's memory collection,
    over a channel of its own. Every call names its principal (background work runs outside
    the request that caused it); retrieval scopes it to that tenant and user. Failures raise
    the ``ParleyError`` retrieval sent (a transport failure: ``service_unavailable``)."""

    def __init__(self, address: str, timeout: float) -> None:
        self._channel = channel(
            address,
            "parley.retrieval.v1.Retrieval",
            # Each is idempotent: an id indexed again is overwritten, a deletion repeated
            # finds nothing more.
            idempotent_methods=["IndexMemories", "SearchMemories", "DeleteMemories"],
            default_timeout=timeout,
        )
        self._stub = ret_grpc.RetrievalStub(self._channel)

    async def index(self, who: Principal, memories: Sequence[Memory]) -> None:
        request = wire.index_memories_request(memories)
        try:
            await self._stub.IndexMemories(request, metadata=who.to_metadata())
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    async def search(
        self, who: Principal, query: str, limit: int, min_score: float | None
    ) -> list[tuple[str, float]]:
        request = wire.search_memories_request(query, limit, min_score)
        try:
            found = await self._stub.SearchMemories(request, metadata=who.to_metadata())
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        return [(m.memory_id, m.score) for m in found.memories]

    async def delete(self, who: Principal, memory_ids: Sequence[str]) -> None:
        request = ret.DeleteMemoriesRequest(memory_ids=list(memory_ids))
        try:
            await self._stub.DeleteMemories(request, metadata=who.to_metadata())
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    async def delete_all(self, who: Principal) -> int:
        try:
            found = await self._stub.DeleteMemories(
                ret.DeleteMemoriesRequest(all=True), metadata=who.to_metadata()
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        return int(found.deleted)

    async def close(self) -> None:
        await self._channel.close()

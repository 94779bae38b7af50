"""``search_knowledge_base``: the conversation's knowledge base, searched through retrieval
with a query the model writes. Offered only to a conversation that has a knowledge base; the
passages found join the answer's citations, under markers after the prompt's own."""

from __future__ import annotations

from typing import Any, Protocol

from parley_conversation.conversations import Conversation, Passage
from parley_conversation.prompt import found_passages
from parley_conversation.tools.base import ToolContext, ToolSpec

MAX_TOP_K = 10


class Searcher(Protocol):
    """Retrieval, as the tool calls it (``adapters/retrieval.py``)."""

    async def search(self, knowledge_base_id: str, query: str, top_k: int) -> list[Passage]: ...


class SearchKnowledgeBase:
    """The ``search_knowledge_base`` tool (see the module docstring)."""

    spec = ToolSpec(
        name="search_knowledge_base",
        description=(
            "Search the organisation's documents attached to this conversation. Write a "
            "standalone query with the key terms; cite the passages you use by their markers."
        ),
        parameters={
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 1000},
                "top_k": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_TOP_K,
                    "description": "How many passages, best first.",
                },
            },
            "required": ["query"],
            "additionalProperties": False,
        },
    )

    def __init__(self, searcher: Searcher, top_k: int) -> None:
        self._searcher = searcher
        self._top_k = min(top_k, MAX_TOP_K)

    def offered(self, conversation: Conversation) -> bool:
        return bool(conversation.knowledge_base_id)

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> str:
        found = await self._searcher.search(
            context.conversation.knowledge_base_id,
            str(arguments["query"]),
            int(arguments.get("top_k") or self._top_k),
        )
        return found_passages(tuple(context.cite(passage) for passage in found))

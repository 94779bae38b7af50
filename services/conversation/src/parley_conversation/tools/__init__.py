"""The tools a model may call while it answers (the tool loop is ``tool_loop.py``).

Built in: ``search_knowledge_base`` (the conversation's knowledge base, through retrieval),
``calculator`` (arithmetic over a parsed expression tree), ``current_time`` (IANA time zones)
and ``http_fetch`` (an allowlist of hosts; off unless hosts are listed). ``TOOLS`` names the
ones a turn offers; each says itself whether a conversation gets it (the knowledge base
search needs a knowledge base).
"""

from __future__ import annotations

from parley_conversation.tools.base import Tool, ToolContext, ToolError, ToolSpec
from parley_conversation.tools.calculator import Calculator
from parley_conversation.tools.clock import CurrentTime
from parley_conversation.tools.http_fetch import HttpFetch
from parley_conversation.tools.knowledge_base import Searcher, SearchKnowledgeBase
from parley_conversation.tools.registry import ToolRegistry

BUILT_IN = ("search_knowledge_base", "calculator", "current_time", "http_fetch")


def built_in(
    names: tuple[str, ...],
    searcher: Searcher,
    *,
    top_k: int,
    fetch_hosts: frozenset[str],
    fetch_timeout: float,
    fetch_max_bytes: int,
) -> ToolRegistry:
    """The registry of the built-in tools ``names`` lists (settings check the names)."""
    made: dict[str, Tool] = {
        "search_knowledge_base": SearchKnowledgeBase(searcher, top_k),
        "calculator": Calculator(),
        "current_time": CurrentTime(),
    }
    if "http_fetch" in names:
        made["http_fetch"] = HttpFetch(fetch_hosts, fetch_timeout, fetch_max_bytes)
    return ToolRegistry(made[name] for name in names)


__all__ = [
    "BUILT_IN",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "ToolSpec",
    "built_in",
]

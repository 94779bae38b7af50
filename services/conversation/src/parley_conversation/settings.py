"""conversation settings, read from the environment (see the README's table)."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field, field_validator, model_validator

from parley_conversation.context import Shares
from parley_conversation.tools import BUILT_IN
from parley_runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    """Storage, peers and the limits of a turn."""

    grpc_port: int = Field(50061, ge=0, le=65535)
    database_url: str = "sqlite:///.parley/conversation.db"
    db_auto_migrate: bool = Field(True, description="Apply migrations at start.")
    llm_router_addr: str = "127.0.0.1:50062"
    retrieval_addr: str = "127.0.0.1:50063"
    model_aliases_ttl_seconds: float = Field(
        5.0,
        ge=0,
        description="The age at which llm-router's list of model aliases is asked for again "
        "(in the background: a send goes on with the list it has).",
    )
    model_check_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="How long a send waits for llm-router to list its models before it is "
        "refused as unavailable.",
    )
    max_message_chars: int = Field(32_000, gt=0)
    context_token_budget: int | None = Field(
        None,
        gt=500,
        description="At most this many tokens of prompt per turn, whatever the model's "
        "window; unset: the window less the answer's reservation.",
    )
    answer_max_tokens: int = Field(
        2048,
        ge=16,
        description="Tokens reserved for an answer (its max_tokens), at most the model's "
        "largest answer and a quarter of its window.",
    )
    summary_max_tokens: int = Field(
        1000, ge=50, description="Most tokens of a conversation's rolling summary."
    )
    memory_max_tokens: int = Field(
        500, ge=0, description="Most tokens of the user's memories in a prompt."
    )
    retrieval_max_tokens: int = Field(
        2000, ge=0, description="Most tokens of retrieved passages in a prompt."
    )
    history_max_messages: int = Field(
        50, ge=2, le=1000, description="Most messages after the summary a turn reads."
    )
    summary_model: str = Field(
        "", max_length=100, description="Alias that writes rolling summaries; empty: default."
    )
    title_model: str = Field(
        "", max_length=100, description="Alias that titles conversations; empty: default."
    )
    rewrite_model: str = Field(
        "",
        max_length=100,
        description="Alias that rewrites a follow-up into a standalone query; empty: default.",
    )
    rewrite_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="How long a turn waits for its standalone query before it searches with "
        "the message as written.",
    )
    count_tokens_timeout_seconds: float = Field(
        1.0, gt=0, description="How long a turn waits for llm-router to count a prompt."
    )
    background_concurrency: int = Field(
        2, ge=0, le=64, description="Background tasks a replica runs at once (0: none)."
    )
    background_poll_seconds: float = Field(
        1.0, gt=0, description="How often a replica looks for background tasks of others."
    )
    background_lease_seconds: float = Field(
        60.0,
        gt=0,
        description="How long a running background task may go without news before any "
        "replica takes it over; renewed every third of it.",
    )
    background_max_attempts: int = Field(
        5, ge=1, le=100, description="Tries of a background task before it is kept failed."
    )
    background_retry_seconds: float = Field(
        2.0, gt=0, description="The first pause before a failed task is tried again (doubles)."
    )
    background_call_timeout_seconds: float = Field(
        60.0, gt=0, description="Deadline of a background task's call to llm-router."
    )
    retrieval_top_k: int = Field(5, ge=1, le=50)
    retrieval_mode: Literal["dense", "sparse", "hybrid"] = Field(
        "hybrid", description="How retrieval ranks a turn's passages."
    )
    retrieval_score_threshold: float | None = Field(
        0.2,
        ge=-1,
        le=1,
        description="Passages less similar to the question than this (cosine) are left out; "
        "unset keeps every passage found.",
    )
    retrieval_timeout_seconds: float = Field(5.0, gt=0)
    memory_model: str = Field(
        "",
        max_length=100,
        description="Alias that reads the facts to remember out of a turn; empty: default.",
    )
    memory_max_per_user: int = Field(
        200, ge=1, le=10_000, description="Memories a user keeps; past it, new facts are not kept."
    )
    memory_max_facts_per_turn: int = Field(
        5, ge=1, le=20, description="New memories one turn may add."
    )
    memory_recall_top_k: int = Field(5, ge=0, le=50, description="Memories a turn recalls.")
    memory_recall_min_score: float = Field(
        0.2,
        ge=-1,
        le=1,
        description="Memories less similar to the message than this (cosine) are not recalled.",
    )
    memory_duplicate_score: float = Field(
        0.85,
        ge=0,
        le=1,
        description="A new fact at least this similar (cosine) to a kept one is a duplicate.",
    )
    turn_timeout_seconds: float = Field(300.0, gt=0, description="Deadline of the model call.")
    turn_flush_seconds: float = Field(
        0.5, gt=0, description="How often a streaming answer's text so far is saved."
    )
    turn_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="How long an answer in progress may go unsaved before any replica closes "
        "it as interrupted; renewed every third of it.",
    )
    tools: str = Field(
        "search_knowledge_base,calculator,current_time",
        description="The tools a turn offers the model, comma-separated, among "
        "search_knowledge_base (only with a knowledge base), calculator, current_time and "
        "http_fetch; empty: none.",
    )
    tool_max_steps: int = Field(
        10, ge=1, le=100, description="Tool steps an answer may take before it fails."
    )
    tool_loop_seconds: float = Field(
        300.0, gt=0, description="Seconds an answer with tool steps may take in all."
    )
    tool_timeout_seconds: float = Field(20.0, gt=0, description="Seconds a tool call may run.")
    tool_output_max_chars: int = Field(
        8000, ge=100, le=1_000_000, description="Characters of a tool's output the model reads."
    )
    http_fetch_allowed_hosts: str = Field(
        "",
        description="Hosts http_fetch may fetch from, comma-separated: host (default port) or "
        "host:port. Required when TOOLS names http_fetch.",
    )
    http_fetch_max_bytes: int = Field(
        1_000_000, ge=1000, le=50_000_000, description="Bytes of a body http_fetch reads."
    )
    replica_id: str = Field(
        "",
        max_length=200,
        description="This replica's name on the answers it writes; empty means host:port, "
        "which a restarted process keeps, so it closes its predecessor's answers at start.",
    )

    @field_validator("retrieval_score_threshold", "context_token_budget", mode="before")
    @classmethod
    def _no_threshold(cls, value: object) -> object:
        """``RETRIEVAL_SCORE_THRESHOLD=`` (empty) or ``none``: no threshold (the same for
        ``CONTEXT_TOKEN_BUDGET``: no cap)."""
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return value

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in BUILT_IN]
        if unknown:
            raise ValueError(f"unknown tool {unknown[0]!r}; the tools are {', '.join(BUILT_IN)}")
        if len(set(names)) != len(names):
            raise ValueError("a tool is named twice")
        return ",".join(names)

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.tools.split(",") if n)

    @property
    def http_fetch_hosts(self) -> frozenset[str]:
        return frozenset(h.strip() for h in self.http_fetch_allowed_hosts.split(",") if h.strip())

    @model_validator(mode="after")
    def _fetch_has_hosts(self) -> Settings:
        if "http_fetch" in self.tool_names and not self.http_fetch_hosts:
            raise ValueError("TOOLS names http_fetch: set HTTP_FETCH_ALLOWED_HOSTS too")
        return self

    @model_validator(mode="after")
    def _lease_outlives_saves(self) -> Settings:
        if self.turn_lease_seconds < 3 * self.turn_flush_seconds:
            raise ValueError("TURN_LEASE_SECONDS must be at least three times TURN_FLUSH_SECONDS")
        return self

    @property
    def owner(self) -> str:
        """The name this replica writes on its answers in progress."""
        if self.replica_id:
            return self.replica_id
        # A port chosen by the system is not kept across restarts: name the process instead,
        # so two such replicas never take each other's answers for their own.
        port = self.grpc_port or f"pid{os.getpid()}"
        return f"{socket.gethostname()}:{port}"


def shares_of(settings: Settings) -> Shares:
    """How a turn's budget is shared, as the settings say (``context.py``)."""
    return Shares(
        answer_tokens=settings.answer_max_tokens,
        cap=settings.context_token_budget,
        summary_tokens=settings.summary_max_tokens,
        memory_tokens=settings.memory_max_tokens,
        passage_tokens=settings.retrieval_max_tokens,
    )

"""What the service keeps and reasons about: conversations, their messages and feedback, the
passages a turn cites, and the two ends of a turn (``TurnStart``, ``Outcome``).

Also the model aliases a turn may name (``ModelAliases``) and the fingerprint that ties an
idempotency key to one request (``request_fingerprint``). Plain types, no I/O. The enums'
values are the strings the database stores; ``wire.py`` alone maps them to and from the
protobuf enums.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

# Citations show a shortened passage; the model saw the whole of it.
SNIPPET_CHARS = 300


class Role(enum.StrEnum):
    """Who wrote a message."""

    # The server's own instructions: in prompts only, never stored nor sent by a client.
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class Status(enum.StrEnum):
    """Where a message stands. User messages are stored complete."""

    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    FAILED = "failed"


# The error code of an answer whose writer died before it ended; its text so far is kept.
INTERRUPTED = "interrupted"
# The error code of an answer stopped on a client's request (or by its client leaving).
CANCELLED = "cancelled"


class AnswerState(enum.Enum):
    """What the writer of an answer in progress learns from the store: keep going, stop (a
    client asked to cancel it, perhaps through another replica), or stop writing (it has
    ended, or was closed as interrupted)."""

    STREAMING = "streaming"
    CANCEL_REQUESTED = "cancel_requested"
    ENDED = "ended"


class FinishReason(enum.StrEnum):
    """Why the model stopped answering."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    ERROR = "error"
    CANCELLED = "cancelled"


class Rating(enum.StrEnum):
    """A user's verdict on an answer."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and cost of a model call; ``estimated`` when not counted by the provider."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class Passage:
    """A chunk of a document that retrieval found for the question, best first."""

    document_id: str
    chunk_id: str
    title: str
    source_uri: str
    text: str
    score: float
    page: int = 0  # the page it starts on, from 1; 0 in a document without pages


@dataclass(frozen=True, slots=True)
class Citation:
    """A passage placed in the prompt under ``marker``; the answer cites it as ``[marker]``."""

    marker: str
    document_id: str
    chunk_id: str
    title: str
    source_uri: str
    snippet: str
    score: float
    page: int = 0

    @classmethod
    def of(cls, marker: str, passage: Passage) -> Citation:
        return cls(
            marker=marker,
            document_id=passage.document_id,
            chunk_id=passage.chunk_id,
            title=passage.title,
            source_uri=passage.source_uri,
            snippet=passage.text[:SNIPPET_CHARS],
            score=passage.score,
            page=passage.page,
        )


@dataclass(frozen=True, slots=True)
class ToolActivity:
    """A tool call the model made while answering, and how it went: its result as given to
    the model (empty while it runs), or the error code of a call that failed. ``step``
    numbers the answer's tool steps from 1; calls of one step ran together."""

    call_id: str
    name: str
    arguments_json: str
    step: int
    result: str = ""
    is_error: bool = False
    error_code: str = ""


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation of one user, with the settings its turns use."""

    id: str
    title: str
    model: str
    knowledge_base_id: str
    temperature: float | None
    message_count: int
    created_at: datetime
    updated_at: datetime
    # The title was taken from the first message; a title written after the first answer
    # may replace it (``titles.py``).
    title_auto: bool = False
    # Turns recall the user's memories and add to them (``memory.py``).
    memory_enabled: bool = True


@dataclass(frozen=True, slots=True)
class Message:
    """A stored message. Assistant messages carry what answered, usage and citations."""

    id: str
    conversation_id: str
    seq: int
    role: Role
    content: str
    status: Status
    created_at: datetime
    model: str = ""
    usage: Usage = Usage()
    finish_reason: FinishReason | None = None
    error_code: str = ""
    citations: tuple[Citation, ...] = ()
    idempotency_key: str | None = None
    tool_activity: tuple[ToolActivity, ...] = ()
    # Answers: the query their passages were searched with (a follow-up made standalone).
    search_query: str = ""


@dataclass(frozen=True, slots=True)
class Feedback:
    """A user's rating of an assistant message (one per user and message)."""

    message_id: str
    rating: Rating
    comment: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TurnStart:
    """The stored pair of a turn; ``replayed`` when the idempotency key was seen before.

    ``assistant`` is None only on a replay whose answer is missing.
    """

    conversation: Conversation
    user: Message
    assistant: Message | None
    replayed: bool


@dataclass(frozen=True, slots=True)
class Summary:
    """A conversation's rolling summary: what its messages ``first_seq`` to ``last_seq`` said
    (``messages`` of them, the superseded left out)."""

    content: str
    first_seq: int
    last_seq: int
    messages: int


@dataclass(frozen=True, slots=True)
class Opening:
    """What a new turn starts from: the conversation, its rolling summary (None before the
    first), and the role and text of its recent messages after the summary, oldest first."""

    conversation: Conversation
    history: list[tuple[Role, str]]
    summary: Summary | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an answer ended, as it is stored: complete, failed or cancelled, with its text."""

    status: Status
    content: str
    finish_reason: FinishReason
    model: str = ""
    usage: Usage = Usage()
    error_code: str = ""
    citations: tuple[Citation, ...] = ()
    tool_activity: tuple[ToolActivity, ...] = ()
    search_query: str = ""


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """What an alias's models take: the smallest context window and the largest answer
    among its candidates (tokens), and whether it is only the offline local provider."""

    context_window: int
    max_output_tokens: int
    local: bool = False


@dataclass(frozen=True, slots=True)
class ModelAliases:
    """The model aliases llm-router serves, with their limits; an empty alias means its
    default."""

    names: frozenset[str]
    default: str
    limits: Mapping[str, ModelLimits] = field(default_factory=dict)

    def knows(self, alias: str) -> bool:
        return not alias or alias in self.names

    def limits_of(self, alias: str) -> ModelLimits | None:
        """The limits of ``alias`` (empty: the default's); None for an alias not listed."""
        return self.limits.get(alias or self.default)


def request_fingerprint(content: str, model: str) -> str:
    """What an idempotency key promises stays the same: the message and its model override
    (a SHA-256, hex). A resend with the key must carry the same of both."""
    # JSON keeps the two apart: no content and model can be shifted into another pair.
    return hashlib.sha256(json.dumps([content, model]).encode()).hexdigest()

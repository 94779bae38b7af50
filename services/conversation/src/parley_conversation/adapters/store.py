"""Conversations, messages and feedback in the service's own database.

The store saves and loads the types of ``conversations.py``; rows never leave it. Every method
a caller names things through takes the principal and filters on its tenant and user: a
conversation of someone else is indistinguishable from one that does not exist. ``history``,
``save_progress`` and ``finish_answer`` act on a turn already begun for its principal.

A user message sent with an idempotency key keeps the fingerprint of its request
(``request_fingerprint``): the key replays its turn only for the same request.

An answer in progress names the replica writing it and holds a lease that the writer renews
as it saves the text so far; ``close_interrupted`` ends the answers whose writer is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Row,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parley_conversation.conversations import (
    CANCELLED,
    INTERRUPTED,
    AnswerState,
    Citation,
    Conversation,
    Feedback,
    FinishReason,
    Message,
    Opening,
    Outcome,
    Rating,
    Role,
    Status,
    Summary,
    ToolActivity,
    TurnStart,
    Usage,
)
from parley_conversation.tables import (
    ConversationRow,
    FeedbackRow,
    MessageRow,
    SummaryRow,
    TaskRow,
)
from parley_runtime import db
from parley_runtime.context import Principal
from parley_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from parley_runtime.ids import new_id
from parley_runtime.timestamps import aware, utcnow

log = logging.getLogger("parley.conversation.store")

# More to write in the transaction that stores an answer's end (plain code: see
# ``parley_runtime.db.transaction``).
Then = Callable[[Connection], None]

TITLE_FROM_MESSAGE_CHARS = 60
# Pauses between tries of an answer's final write (a database failover, a cut connection).
END_RETRY_PAUSES = (0.1, 0.4, 1.0)
# How long a client is told to wait before sending again to a conversation that answers.
BUSY_RETRY_SECONDS = 2.0


def busy() -> FailedPrecondition:
    """The refusal of a send while the conversation answers another message."""
    return FailedPrecondition(
        "the conversation is answering another message; send this one once that answer has ended",
        code="conversation_busy",
        retry_after=BUSY_RETRY_SECONDS,
    )


# A turn's own reads and writes are SQLAlchemy Core statements on the tables (no ORM session
# or objects): every streamed turn makes them, and the ORM's unit of work cost more than the
# queries. Statements are built once; their parameters are bound per call.
CONVERSATIONS = cast(Table, ConversationRow.__table__)
MESSAGES = cast(Table, MessageRow.__table__)
SUMMARIES = cast(Table, SummaryRow.__table__)
_c, _m, _s = CONVERSATIONS.c, MESSAGES.c, SUMMARIES.c
_KEY_USER = MESSAGES.alias("key_user")
# The caller's conversation, its rolling summary and, when ``key`` began a turn in it, that
# turn's user message: one round trip for a send's first read.
_OWNED_WITH_KEY = (
    select(
        CONVERSATIONS,
        _KEY_USER.c.id.label("key_message_id"),
        _KEY_USER.c.request_fingerprint.label("key_fingerprint"),
        _s.content.label("summary_content"),
        _s.first_seq.label("summary_first_seq"),
        _s.last_seq.label("summary_last_seq"),
        _s.messages.label("summary_messages"),
    )
    .select_from(
        CONVERSATIONS.outerjoin(
            _KEY_USER,
            and_(
                _KEY_USER.c.conversation_id == _c.id,
                _KEY_USER.c.idempotency_key == bindparam("key"),
            ),
        ).outerjoin(SUMMARIES, _s.conversation_id == _c.id)
    )
    .where(_c.id == bindparam("cid"), _c.tenant_id == bindparam("tenant"))
    .where(_c.user_id == bindparam("user"))
)
_OWNED = select(_c.id).where(
    _c.id == bindparam("cid"), _c.tenant_id == bindparam("tenant"), _c.user_id == bindparam("user")
)
_SUMMARY = select(_s.content, _s.first_seq, _s.last_seq, _s.messages).where(
    _s.conversation_id == bindparam("cid")
)
# A conversation answers one message at a time: a turn takes it while no answer is being
# written (or the one that was has outlived any turn), in the statement that counts its
# messages, so two sends never interleave, whichever replicas they reach.
_FREE = or_(_c.active_answer_id.is_(None), _c.active_until < bindparam("now"))
_RELEASE = (
    update(CONVERSATIONS)
    .where(_c.id == bindparam("cid"), _c.active_answer_id == bindparam("answer_id"))
    .values(active_answer_id=None, active_until=None)
)
_MESSAGE_BY_ID = select(MESSAGES).where(_m.id == bindparam("id"))
_LAST_REPLY = (
    select(MESSAGES).where(_m.reply_to == bindparam("user_id")).order_by(_m.seq.desc()).limit(1)
)
# Counting the turn's two messages first also locks the conversation's row (PostgreSQL), so
# concurrent sends to one conversation take positions one after the other.
_COUNT_TURN = (
    update(CONVERSATIONS)
    .where(_c.id == bindparam("cid"), _c.tenant_id == bindparam("tenant"))
    .where(_c.user_id == bindparam("user"), _FREE)
    .values(
        message_count=_c.message_count + 2,
        updated_at=bindparam("now"),
        title=case((_c.title == "", bindparam("new_title")), else_=_c.title),
        title_auto=case((_c.title == "", true()), else_=_c.title_auto),
        active_answer_id=bindparam("answer_id"),
        active_until=bindparam("busy_until"),
    )
    .returning(*CONVERSATIONS.c)
)
_TAKE_FOR_REGENERATION = (
    update(CONVERSATIONS)
    .where(_c.id == bindparam("cid"), _c.tenant_id == bindparam("tenant"))
    .where(_c.user_id == bindparam("user"), _FREE)
    .values(
        updated_at=bindparam("now"),
        active_answer_id=bindparam("answer_id"),
        active_until=bindparam("busy_until"),
    )
    .returning(*CONVERSATIONS.c)
)
_LAST_SEQ = select(func.max(_m.seq)).where(_m.conversation_id == bindparam("cid"))
_INSERT_MESSAGE = insert(MESSAGES)
_RECENT = (
    select(_m.role, _m.status, _m.content)
    .where(_m.conversation_id == bindparam("cid"), _m.superseded.is_(False))
    .where(_m.seq > bindparam("after_seq"))
    .order_by(_m.seq.desc())
    .limit(bindparam("limit"))
)
_HISTORY = _RECENT.where(_m.seq < bindparam("before_seq"))
# The columns an answer's writes set are named by the parameters they are executed with.
# A save also tells the writer whether a client asked to stop the answer.
_SAVE_PROGRESS = (
    update(MESSAGES)
    .where(_m.id == bindparam("answer_id"), _m.status == Status.IN_PROGRESS.value)
    .returning(_m.cancel_requested)
)
_ANSWER_STATE = select(_m.status, _m.cancel_requested).where(_m.id == bindparam("answer_id"))
_FINISH_ANSWER = (
    update(MESSAGES)
    .where(_m.id == bindparam("answer_id"))
    .values(lease_until=None)
    .returning(*MESSAGES.c)
)


def _conversation(row: ConversationRow | Row[Any]) -> Conversation:
    return Conversation(
        id=row.id,
        title=row.title,
        model=row.model,
        knowledge_base_id=row.knowledge_base_id,
        temperature=row.temperature,
        message_count=row.message_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
        memory_enabled=row.memory_enabled,
        title_auto=row.title_auto,
    )


def _summary_of(row: Row[Any]) -> Summary | None:
    """The summary columns of ``_OWNED_WITH_KEY``, or None before the first."""
    if row.summary_content is None:
        return None
    return Summary(
        row.summary_content, row.summary_first_seq, row.summary_last_seq, row.summary_messages
    )


def _citation_json(citation: Citation) -> dict[str, Any]:
    return {
        "marker": citation.marker,
        "document_id": citation.document_id,
        "chunk_id": citation.chunk_id,
        "title": citation.title,
        "source_uri": citation.source_uri,
        "snippet": citation.snippet,
        "score": citation.score,
        "page": citation.page,
    }


def _citation(data: dict[str, Any]) -> Citation:
    return Citation(
        marker=str(data.get("marker", "")),
        document_id=str(data.get("document_id", "")),
        chunk_id=str(data.get("chunk_id", "")),
        title=str(data.get("title", "")),
        source_uri=str(data.get("source_uri", "")),
        snippet=str(data.get("snippet", "")),
        score=float(data.get("score", 0.0)),
        page=int(data.get("page", 0)),
    )


def _tool_activity_json(activity: ToolActivity) -> dict[str, Any]:
    return {
        "call_id": activity.call_id,
        "name": activity.name,
        "arguments_json": activity.arguments_json,
        "step": activity.step,
        "result": activity.result,
        "is_error": activity.is_error,
        "error_code": activity.error_code,
    }


def _tool_activity(data: dict[str, Any]) -> ToolActivity:
    return ToolActivity(
        call_id=str(data.get("call_id", "")),
        name=str(data.get("name", "")),
        arguments_json=str(data.get("arguments_json", "")),
        step=int(data.get("step", 0)),
        result=str(data.get("result", "")),
        is_error=bool(data.get("is_error", False)),
        error_code=str(data.get("error_code", "")),
    )


def _message(row: MessageRow | Row[Any]) -> Message:
    return Message(
        id=row.id,
        conversation_id=row.conversation_id,
        seq=row.seq,
        role=Role(row.role),
        content=row.content,
        status=Status(row.status),
        created_at=row.created_at,
        model=row.model,
        usage=Usage(row.input_tokens, row.output_tokens, row.cost_usd, row.usage_estimated),
        finish_reason=FinishReason(row.finish_reason) if row.finish_reason else None,
        error_code=row.error_code,
        citations=tuple(_citation(c) for c in row.citations or ()),
        idempotency_key=row.idempotency_key,
        tool_activity=tuple(_tool_activity(t) for t in row.tool_activity or ()),
        search_query=row.search_query or "",
    )


def _shown(rows: Sequence[Row[Any, Any, Any]]) -> list[tuple[Role, str]]:
    """Newest-first history rows as a prompt carries them, oldest first: complete messages,
    and answers cut short that have text (they still tell the model what it said)."""
    return [
        (Role(role), content)
        for role, status, content in reversed(rows)
        if status == Status.COMPLETE or (role == Role.ASSISTANT and content)
    ]


def _feedback(row: FeedbackRow) -> Feedback:
    return Feedback(
        message_id=row.message_id,
        rating=Rating(row.rating),
        comment=row.comment,
        created_at=row.created_at,
    )


def _message_values(who: Principal, message: Message, **extra: Any) -> dict[str, Any]:
    """The columns of a new message's row."""
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "tenant_id": who.tenant_id,
        "user_id": who.user_id,
        "seq": message.seq,
        "role": message.role.value,
        "content": message.content,
        "status": message.status.value,
        "model": "",
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "usage_estimated": False,
        "finish_reason": "",
        "error_code": "",
        "citations": [],
        "tool_activity": [],
        "idempotency_key": message.idempotency_key,
        "request_fingerprint": None,
        "reply_to": None,
        "superseded": False,
        "created_at": message.created_at,
        "owner": None,
        "lease_until": None,
        "cancel_requested": False,
        "search_query": "",
        **extra,
    }


def _new_message(
    who: Principal, cid: str, seq: int, role: Role, content: str, status: Status, at: datetime
) -> MessageRow:
    return MessageRow(
        id=new_id("msg"),
        conversation_id=cid,
        tenant_id=who.tenant_id,
        user_id=who.user_id,
        seq=seq,
        role=role.value,
        content=content,
        status=status.value,
        model="",
        input_tokens=0,
        output_tokens=0,
        cost_usd=0.0,
        usage_estimated=False,
        finish_reason="",
        error_code="",
        citations=[],
        tool_activity=[],
        superseded=False,
        created_at=at,
        cancel_requested=False,
        search_query="",
    )


def _history(conn: Connection, conversation: Conversation, before_seq: int, limit: int) -> Opening:
    cid = conversation.id
    found = conn.execute(_SUMMARY, {"cid": cid}).first()
    summary = Summary(*found) if found is not None else None
    after = summary.last_seq if summary is not None else 0
    params = {"cid": cid, "before_seq": before_seq, "limit": limit, "after_seq": after}
    return Opening(conversation, _shown(conn.execute(_HISTORY, params).all()), summary)


def _find_turn(
    conn: Connection,
    who: Principal,
    cid: str,
    key: str | None,
    fingerprint: str | None,
    history: int,
) -> TurnStart | Opening:
    params = {"cid": cid, "tenant": who.tenant_id, "user": who.user_id, "key": key}
    row = conn.execute(_OWNED_WITH_KEY, params).first()
    if row is None:
        raise NotFound(f"conversation {cid!r} not found", code="conversation_not_found")
    if not key or row.key_message_id is None:
        recent: list[tuple[Role, str]] = []
        summary = _summary_of(row)
        if history and row.message_count:
            after = summary.last_seq if summary is not None else 0
            found = conn.execute(_RECENT, {"cid": cid, "limit": history, "after_seq": after})
            recent = _shown(found.all())
        return Opening(_conversation(row), recent, summary)
    stored = row.key_fingerprint
    if fingerprint is not None and stored is not None and stored != fingerprint:
        raise InvalidArgument(
            "idempotency_key: this key was used for a different message; "
            "send a new message with a new key",
            code="idempotency_key_reused",
        )
    user = conn.execute(_MESSAGE_BY_ID, {"id": row.key_message_id}).one()
    assistant = conn.execute(_LAST_REPLY, {"user_id": user.id}).first()
    return TurnStart(
        _conversation(row),
        _message(user),
        _message(assistant) if assistant is not None else None,
        replayed=True,
    )


class ConversationStore:
    """The repository of the conversation service (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        owner: str = "",
        lease_seconds: float = 30.0,
        turn_seconds: float = 330.0,
    ) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        # The replica this store writes answers for, and how long an answer in progress may
        # go without news before another replica may close it.
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        # The longest a turn may hold its conversation (its model call's deadline and a
        # lease): past it, a conversation whose answer was never released takes turns again.
        self.turn_hold = timedelta(seconds=turn_seconds)

    def _open_answer(
        self, who: Principal, cid: str, seq: int, reply_to: str, at: datetime
    ) -> MessageRow:
        answer = _new_message(who, cid, seq, Role.ASSISTANT, "", Status.IN_PROGRESS, at)
        answer.reply_to = reply_to
        answer.owner = self.owner
        answer.lease_until = at + self.lease
        return answer

    async def _owned(self, session: AsyncSession, who: Principal, cid: str) -> ConversationRow:
        row = await session.get(ConversationRow, cid)
        if row is None or row.tenant_id != who.tenant_id or row.user_id != who.user_id:
            raise NotFound(f"conversation {cid!r} not found", code="conversation_not_found")
        return row

    async def create(
        self,
        who: Principal,
        title: str,
        model: str,
        kb: str,
        temperature: float | None,
        memory_enabled: bool = True,
    ) -> Conversation:
        now = utcnow()
        row = ConversationRow(
            id=new_id("conv"),
            tenant_id=who.tenant_id,
            user_id=who.user_id,
            title=title,
            model=model,
            knowledge_base_id=kb,
            temperature=temperature,
            message_count=0,
            created_at=now,
            updated_at=now,
            memory_enabled=memory_enabled,
        )
        async with self.sessions.begin() as session:
            session.add(row)
        return _conversation(row)

    async def get(self, who: Principal, cid: str) -> Conversation:
        async with self.sessions() as session:
            return _conversation(await self._owned(session, who, cid))

    async def list_for(
        self, who: Principal, limit: int, after: tuple[datetime, str] | None
    ) -> list[Conversation]:
        """Most recently updated first; ``after`` is the (updated_at, id) of the last row seen."""
        query = (
            select(ConversationRow)
            .where(
                ConversationRow.tenant_id == who.tenant_id,
                ConversationRow.user_id == who.user_id,
            )
            .order_by(ConversationRow.updated_at.desc(), ConversationRow.id.desc())
            .limit(limit)
        )
        if after is not None:
            at, cid = after
            query = query.where(
                (ConversationRow.updated_at < at)
                | ((ConversationRow.updated_at == at) & (ConversationRow.id < cid))
            )
        async with self.sessions() as session:
            return [_conversation(row) for row in (await session.scalars(query)).all()]

    async def update(self, who: Principal, cid: str, changes: dict[str, Any]) -> Conversation:
        async with self.sessions.begin() as session:
            row = await self._owned(session, who, cid)
            for name, value in changes.items():
                setattr(row, name, value)
            if "title" in changes:
                row.title_auto = False  # the client's title stays
            row.updated_at = utcnow()
        return _conversation(row)

    async def delete(self, who: Principal, cid: str) -> None:
        async with self.sessions.begin() as session:
            row = await self._owned(session, who, cid)
            await session.execute(delete(MessageRow).where(MessageRow.conversation_id == cid))
            await session.execute(delete(SummaryRow).where(SummaryRow.conversation_id == cid))
            await session.execute(delete(TaskRow).where(TaskRow.conversation_id == cid))
            await session.delete(row)

    async def messages(self, who: Principal, cid: str, limit: int, after_seq: int) -> list[Message]:
        """Oldest first, superseded answers left out."""
        async with self.sessions() as session:
            await self._owned(session, who, cid)
            query = (
                select(MessageRow)
                .where(
                    MessageRow.conversation_id == cid,
                    MessageRow.seq > after_seq,
                    MessageRow.superseded.is_(False),
                )
                .order_by(MessageRow.seq)
                .limit(limit)
            )
            return [_message(row) for row in (await session.scalars(query)).all()]

    async def message(self, who: Principal, cid: str, message_id: str) -> Message:
        """One message of the caller's conversation, superseded answers included."""
        async with self.sessions() as session:
            await self._owned(session, who, cid)
            row = await session.get(MessageRow, message_id)
        if row is None or row.conversation_id != cid:
            raise NotFound(f"message {message_id!r} not found", code="message_not_found")
        return _message(row)

    async def request_cancel(self, who: Principal, cid: str, message_id: str) -> Message:
        """Record that the caller asks to stop an answer of its conversation; the answer as
        it stands. An answer that has ended is left as it is; a user message is
        FAILED_PRECONDITION ``not_an_answer``."""
        async with self.sessions.begin() as session:
            await self._owned(session, who, cid)
            row = await session.get(MessageRow, message_id)
            if row is None or row.conversation_id != cid:
                raise NotFound(f"message {message_id!r} not found", code="message_not_found")
            if row.role != Role.ASSISTANT:
                raise FailedPrecondition(
                    "only an answer can be cancelled; this is a user message",
                    code="not_an_answer",
                )
            if row.status == Status.IN_PROGRESS:
                row.cancel_requested = True
        return _message(row)

    async def history(self, conversation: Conversation, before_seq: int, limit: int) -> Opening:
        """The conversation's rolling summary and the role and text of its last ``limit``
        messages after the summary and before ``before_seq`` that a prompt carries
        (``_shown``), oldest first."""
        if before_seq <= 1:
            return Opening(conversation, [])  # the first message has nothing before it
        return await db.reading(self.engine, _history, conversation, before_seq, limit)

    async def find_turn(
        self,
        who: Principal,
        cid: str,
        key: str | None,
        fingerprint: str | None = None,
        history: int = 0,
    ) -> TurnStart | Opening:
        """The turn ``key`` began in the caller's conversation, to replay; else the
        conversation, with its last ``history`` messages that a prompt carries (``_shown``).
        A key sent before with another request (``fingerprint`` differs) is INVALID_ARGUMENT
        ``idempotency_key_reused``."""
        return await db.reading(self.engine, _find_turn, who, cid, key, fingerprint, history)

    async def begin_turn(
        self,
        who: Principal,
        cid: str,
        content: str,
        idempotency_key: str | None,
        fingerprint: str | None = None,
    ) -> TurnStart:
        """Store the user message and an in-progress answer, once per idempotency key: a key
        already taken replays its turn (see ``find_turn``). While another answer of the
        conversation is being written the send is FAILED_PRECONDITION ``conversation_busy``
        (with a retry hint), unless it is that turn sent again with its key."""
        for _ in range(5):
            try:
                started = await self._insert_turn(who, cid, content, idempotency_key, fingerprint)
            except IntegrityError:
                started = None  # another request took the key or the position first
            if started is not None:
                return started
            if idempotency_key:
                found = await self.find_turn(who, cid, idempotency_key, fingerprint)
                if isinstance(found, TurnStart):
                    return found
            if not await self._free(who, cid):
                break
        raise busy()

    async def _free(self, who: Principal, cid: str) -> bool:
        """Whether the caller's conversation takes a turn now (NOT_FOUND if it is not theirs)."""
        query = select(_c.active_answer_id, _c.active_until).where(
            _c.id == cid, _c.tenant_id == who.tenant_id, _c.user_id == who.user_id
        )
        row = await db.reading(self.engine, lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFound(f"conversation {cid!r} not found", code="conversation_not_found")
        return row.active_answer_id is None or aware(row.active_until) < utcnow()

    async def _insert_turn(
        self, who: Principal, cid: str, content: str, key: str | None, fingerprint: str | None
    ) -> TurnStart | None:
        """The turn stored, or None while the conversation answers another message."""
        now = utcnow()
        title = " ".join(content.split())[:TITLE_FROM_MESSAGE_CHARS]
        answer_id = new_id("msg")
        values = {
            "cid": cid,
            "tenant": who.tenant_id,
            "user": who.user_id,
            "now": now,
            "new_title": title,
            "answer_id": answer_id,
            "busy_until": now + self.turn_hold,
        }
        lease_until = now + self.lease

        def insert(conn: Connection) -> TurnStart | None:
            conversation = conn.execute(_COUNT_TURN, values).first()
            if conversation is None:
                if conn.scalar(_OWNED, values) is None:
                    raise NotFound(f"conversation {cid!r} not found", code="conversation_not_found")
                return None
            seq = (conn.scalar(_LAST_SEQ, {"cid": cid}) or 0) + 1
            user = Message(
                new_id("msg"),
                cid,
                seq,
                Role.USER,
                content,
                Status.COMPLETE,
                now,
                idempotency_key=key,
            )
            assistant = Message(
                answer_id, cid, seq + 1, Role.ASSISTANT, "", Status.IN_PROGRESS, now
            )
            conn.execute(
                _INSERT_MESSAGE,
                [
                    _message_values(who, user, request_fingerprint=fingerprint if key else None),
                    _message_values(
                        who, assistant, reply_to=user.id, owner=self.owner, lease_until=lease_until
                    ),
                ],
            )
            return TurnStart(_conversation(conversation), user, assistant, replayed=False)

        return await db.brief_transaction(self.engine, insert)

    async def begin_regeneration(self, who: Principal, cid: str) -> TurnStart:
        """Supersede the last answer and open a new one to the same user message; while
        another answer of the conversation is being written, FAILED_PRECONDITION
        ``conversation_busy``."""
        now = utcnow()
        answer_id = new_id("msg")
        values = {
            "cid": cid,
            "tenant": who.tenant_id,
            "user": who.user_id,
            "now": now,
            "answer_id": answer_id,
            "busy_until": now + self.turn_hold,
        }
        async with self.sessions.begin() as session:
            taken = (await session.execute(_TAKE_FOR_REGENERATION, values)).first()
            if taken is None:
                if await session.scalar(_OWNED, values) is None:
                    raise NotFound(f"conversation {cid!r} not found", code="conversation_not_found")
                raise busy()
            user = await session.scalar(
                select(MessageRow)
                .where(MessageRow.conversation_id == cid, MessageRow.role == Role.USER.value)
                .order_by(MessageRow.seq.desc())
                .limit(1)
            )
            if user is None:
                raise FailedPrecondition(
                    "the conversation has no message to answer again", code="nothing_to_regenerate"
                )
            await session.execute(
                update(MessageRow).where(MessageRow.reply_to == user.id).values(superseded=True)
            )
            last = await session.scalar(
                select(func.max(MessageRow.seq)).where(MessageRow.conversation_id == cid)
            )
            assistant = self._open_answer(who, cid, (last or 0) + 1, user.id, now)
            assistant.id = answer_id
            session.add(assistant)
        return TurnStart(_conversation(taken), _message(user), _message(assistant), replayed=False)

    async def finish_answer(
        self, message_id: str, outcome: Outcome, then: Then | None = None
    ) -> Message:
        """Store how an answer ended (complete, failed or cancelled, with its text), and
        release its conversation for the next turn, trying again over a brief database
        failure: the answer would otherwise stay in progress until its lease ran out, then
        be closed as interrupted with only its saved text. ``then`` writes more in the same
        transaction (the background work the turn leaves)."""
        for pause in END_RETRY_PAUSES:
            try:
                return await self._finish_answer(message_id, outcome, then)
            except DBAPIError:
                log.warning("could not store an answer's end; trying again", exc_info=True)
            await asyncio.sleep(pause)
        return await self._finish_answer(message_id, outcome, then)

    async def _finish_answer(self, message_id: str, outcome: Outcome, then: Then | None) -> Message:
        usage = outcome.usage
        values = {
            "answer_id": message_id,
            "content": outcome.content,
            "status": outcome.status.value,
            "model": outcome.model,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cost_usd": usage.cost_usd,
            "usage_estimated": usage.estimated,
            "finish_reason": outcome.finish_reason.value,
            "error_code": outcome.error_code,
            "citations": [_citation_json(c) for c in outcome.citations],
            "tool_activity": [_tool_activity_json(t) for t in outcome.tool_activity],
            "search_query": outcome.search_query,
        }

        def finish(conn: Connection) -> Message:
            row = conn.execute(_FINISH_ANSWER, values).first()
            if row is None:
                raise NotFound(f"message {message_id!r} not found", code="message_not_found")
            # The conversation takes its next turn.
            conn.execute(_RELEASE, {"cid": row.conversation_id, "answer_id": message_id})
            if then is not None:
                then(conn)
            return _message(row)

        return await db.brief_transaction(self.engine, finish)

    async def exchange(
        self, who: Principal, cid: str, answer_id: str
    ) -> tuple[Message, Message] | None:
        """The user message and the answer ``answer_id`` of the caller's conversation; None
        when the answer is no longer there."""
        async with self.engine.connect() as conn:
            answer = (await conn.execute(_MESSAGE_BY_ID, {"id": answer_id})).first()
            if (
                answer is None
                or answer.conversation_id != cid
                or answer.tenant_id != who.tenant_id
                or answer.user_id != who.user_id
                or answer.reply_to is None
            ):
                return None
            user = (await conn.execute(_MESSAGE_BY_ID, {"id": answer.reply_to})).first()
        return None if user is None else (_message(user), _message(answer))

    async def save_progress(
        self,
        message_id: str,
        content: str,
        tool_activity: Sequence[ToolActivity] | None = None,
    ) -> AnswerState:
        """Store the text of an answer in progress so far (and its tool activity, when
        given) and renew its lease; what the writer should do next (ENDED: the answer is no
        longer in progress, it ended or was closed as interrupted)."""
        values: dict[str, Any] = {
            "answer_id": message_id,
            "content": content,
            "lease_until": utcnow() + self.lease,
        }
        if tool_activity is not None:
            values["tool_activity"] = [_tool_activity_json(t) for t in tool_activity]
        row = await db.brief_transaction(
            self.engine, lambda conn: conn.execute(_SAVE_PROGRESS, values).first()
        )
        if row is None:
            return AnswerState.ENDED
        return AnswerState.CANCEL_REQUESTED if row.cancel_requested else AnswerState.STREAMING

    async def answer_state(self, message_id: str) -> AnswerState:
        """Whether an answer in progress should go on (a read by primary key, no write)."""
        row = await db.reading(
            self.engine, lambda conn: conn.execute(_ANSWER_STATE, {"answer_id": message_id}).first()
        )
        if row is None or row.status != Status.IN_PROGRESS:
            return AnswerState.ENDED
        return AnswerState.CANCEL_REQUESTED if row.cancel_requested else AnswerState.STREAMING

    async def close_interrupted(self, include_own: bool = False) -> int:
        """Close as failed (``interrupted``), with the text they kept, the answers in progress
        whose owner is gone: their lease has run out, or (``include_own``, at start) a
        previous process of this replica wrote them. An answer a client had asked to stop is
        closed as cancelled instead. Returns how many were closed."""
        gone = MessageRow.lease_until.is_(None) | (MessageRow.lease_until < utcnow())
        if include_own and self.owner:
            gone = gone | (MessageRow.owner == self.owner)
        asked = MessageRow.cancel_requested.is_(True)
        async with self.sessions.begin() as session:
            closed = (
                await session.execute(
                    update(MessageRow)
                    .where(MessageRow.status == Status.IN_PROGRESS.value, gone)
                    .values(
                        status=case((asked, Status.CANCELLED.value), else_=Status.FAILED.value),
                        finish_reason=case(
                            (asked, FinishReason.CANCELLED.value), else_=FinishReason.ERROR.value
                        ),
                        error_code=case((asked, CANCELLED), else_=INTERRUPTED),
                        lease_until=None,
                    )
                    .returning(MessageRow.id)
                )
            ).all()
            ids = [row.id for row in closed]
            if ids:  # their conversations take turns again
                await session.execute(
                    update(ConversationRow)
                    .where(ConversationRow.active_answer_id.in_(ids))
                    .values(active_answer_id=None, active_until=None)
                )
        return len(ids)

    async def unsummarised(
        self, who: Principal, cid: str, limit: int
    ) -> tuple[Conversation, Summary | None, list[tuple[int, Role, str]]]:
        """The caller's conversation, its rolling summary, and up to ``limit`` of the messages
        after it that a prompt carries (``_shown``), oldest first, as (seq, role, text): up to
        the first answer still being written."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    _OWNED_WITH_KEY,
                    {"cid": cid, "tenant": who.tenant_id, "user": who.user_id, "key": None},
                )
            ).first()
            if row is None:
                raise NotFound(f"conversation {cid!r} not found", code="conversation_not_found")
            summary = _summary_of(row)
            rows = (
                await conn.execute(
                    select(_m.seq, _m.role, _m.status, _m.content)
                    .where(_m.conversation_id == cid, _m.superseded.is_(False))
                    .where(_m.seq > (summary.last_seq if summary is not None else 0))
                    .order_by(_m.seq)
                    .limit(limit)
                )
            ).all()
        messages: list[tuple[int, Role, str]] = []
        for seq, role, status, content in rows:
            if status == Status.IN_PROGRESS:
                break
            if status == Status.COMPLETE or (role == Role.ASSISTANT and content):
                messages.append((seq, Role(role), content))
        return _conversation(row), summary, messages

    async def save_summary(self, who: Principal, cid: str, summary: Summary, model: str) -> bool:
        """Store the conversation's new rolling summary; False (nothing changed) when the one
        stored already covers as far (a task run twice never moves it back)."""
        now = utcnow()
        values = {
            "content": summary.content,
            "first_seq": summary.first_seq,
            "last_seq": summary.last_seq,
            "messages": summary.messages,
            "model": model,
            "updated_at": now,
        }
        async with self.engine.begin() as conn:
            moved = await conn.execute(
                update(SUMMARIES)
                .where(_s.conversation_id == cid, _s.tenant_id == who.tenant_id)
                .where(_s.user_id == who.user_id, _s.last_seq < summary.last_seq)
                .values(**values)
            )
            if moved.rowcount:
                return True
            there = await conn.scalar(select(_s.last_seq).where(_s.conversation_id == cid))
            if there is not None:
                return False
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(SUMMARIES).values(
                        conversation_id=cid,
                        tenant_id=who.tenant_id,
                        user_id=who.user_id,
                        created_at=now,
                        **values,
                    )
                )
        except IntegrityError:
            return False  # written meanwhile, or the conversation is gone
        return True

    async def first_exchange(self, who: Principal, cid: str) -> tuple[str, str] | None:
        """The first user message of the caller's conversation and its complete answer, or
        None while there is none."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(_m.role, _m.status, _m.content)
                    .where(_m.conversation_id == cid, _m.tenant_id == who.tenant_id)
                    .where(_m.user_id == who.user_id, _m.superseded.is_(False))
                    .order_by(_m.seq)
                    .limit(4)
                )
            ).all()
        question = next((r.content for r in rows if r.role == Role.USER), None)
        answer = next(
            (r.content for r in rows if r.role == Role.ASSISTANT and r.status == Status.COMPLETE),
            None,
        )
        return None if question is None or answer is None else (question, answer)

    async def retitle(self, who: Principal, cid: str, taken: str, title: str) -> bool:
        """Replace the title taken from the first message (``taken``) with ``title``; False
        when the client has set a title since (theirs stays)."""
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(CONVERSATIONS)
                .where(_c.id == cid, _c.tenant_id == who.tenant_id, _c.user_id == who.user_id)
                .where(_c.title_auto.is_(True), _c.title == taken)
                .values(title=title, title_auto=False)
            )
        return bool(done.rowcount)

    async def feedback(
        self, who: Principal, cid: str, message_id: str, rating: Rating, comment: str
    ) -> Feedback:
        """Rate an assistant message; a new rating replaces the user's earlier one."""
        async with self.sessions.begin() as session:
            await self._owned(session, who, cid)
            message = await session.get(MessageRow, message_id)
            if message is None or message.conversation_id != cid:
                raise NotFound(f"message {message_id!r} not found", code="message_not_found")
            if message.role != Role.ASSISTANT:
                raise FailedPrecondition(
                    "feedback is for assistant messages", code="feedback_on_user_message"
                )
            row = await session.get(FeedbackRow, (message_id, who.user_id))
            if row is None:
                row = FeedbackRow(
                    message_id=message_id, user_id=who.user_id, tenant_id=who.tenant_id
                )
                session.add(row)
            row.rating, row.comment, row.created_at = rating.value, comment, utcnow()
        return _feedback(row)

    async def export(
        self, who: Principal
    ) -> list[tuple[Conversation, list[Message], list[Feedback]]]:
        """Every conversation of the user, oldest first, with its messages and ratings."""
        async with self.sessions() as session:
            conversations = (
                await session.scalars(
                    select(ConversationRow)
                    .where(
                        ConversationRow.tenant_id == who.tenant_id,
                        ConversationRow.user_id == who.user_id,
                    )
                    .order_by(ConversationRow.created_at)
                )
            ).all()
            result = []
            for conversation in conversations:
                messages = (
                    await session.scalars(
                        select(MessageRow)
                        .where(MessageRow.conversation_id == conversation.id)
                        .order_by(MessageRow.seq)
                    )
                ).all()
                ids = [m.id for m in messages]
                feedback = (
                    (
                        await session.scalars(
                            select(FeedbackRow).where(
                                FeedbackRow.message_id.in_(ids), FeedbackRow.user_id == who.user_id
                            )
                        )
                    ).all()
                    if ids
                    else []
                )
                result.append(
                    (
                        _conversation(conversation),
                        [_message(m) for m in messages],
                        [_feedback(f) for f in feedback],
                    )
                )
            return result

    async def delete_user(self, who: Principal) -> tuple[int, int, int]:
        """Delete everything of the principal's user; return how many conversations,
        messages and ratings were deleted."""
        owner = (ConversationRow.tenant_id == who.tenant_id) & (
            ConversationRow.user_id == who.user_id
        )
        mine = (FeedbackRow.tenant_id == who.tenant_id) & (FeedbackRow.user_id == who.user_id)
        async with self.sessions.begin() as session:
            ids = list((await session.scalars(select(ConversationRow.id).where(owner))).all())
            messages = 0
            feedback = int(
                await session.scalar(select(func.count()).select_from(FeedbackRow).where(mine)) or 0
            )
            await session.execute(delete(FeedbackRow).where(mine))
            if ids:
                messages = int(
                    await session.scalar(
                        select(func.count())
                        .select_from(MessageRow)
                        .where(MessageRow.conversation_id.in_(ids))
                    )
                    or 0
                )
                await session.execute(delete(MessageRow).where(MessageRow.conversation_id.in_(ids)))
                await session.execute(delete(SummaryRow).where(SummaryRow.conversation_id.in_(ids)))
                await session.execute(delete(TaskRow).where(TaskRow.conversation_id.in_(ids)))
                await session.execute(delete(ConversationRow).where(ConversationRow.id.in_(ids)))
        return len(ids), messages, feedback

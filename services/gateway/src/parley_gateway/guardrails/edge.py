"""The one place the gateway applies its guardrails: to what a user sends, and to the answers
it shows.

Every route that takes a user's chat text calls :meth:`Guardrails.check_input` and passes on
what it returns; every route that streams or shows an answer goes through
:meth:`Guardrails.answer` (a streamed turn) or :meth:`Guardrails.shown` (a stored message).
The tenant's :class:`~parley_gateway.guardrails.policy.Policy` says which guards run and how
hard. Each decision is counted (``parley_guardrail_decisions_total``) and added to the
request's span as a ``guardrail`` event (:func:`parley_runtime.guardrails.record`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from parley_gateway.guardrails import pii
from parley_gateway.guardrails.moderation import Classifier, ClassifierUnavailable
from parley_gateway.guardrails.policy import Policies, Policy
from parley_runtime.errors import InvalidArgument, Unavailable
from parley_runtime.guardrails import normalise, record, scan

if TYPE_CHECKING:
    from parley_gateway.settings import Settings

Event = tuple[str, dict[str, Any]]


class GuardrailBlocked(InvalidArgument):
    """422: a guardrail refused the text; the message names the guard and what it found."""

    default_code = "guardrail_blocked"

    def __init__(self, guard: str, kinds: tuple[str, ...]) -> None:
        super().__init__(f"refused by the {guard} guardrail ({', '.join(kinds)})")
        self.guard = guard


class Guardrails:
    """The guardrails of every tenant (see the module docstring)."""

    def __init__(
        self,
        policies: Policies,
        classifier: Classifier | None = None,
        *,
        moderation_fail_open: bool = True,
        pii_hold_chars: int = 256,
    ) -> None:
        self.policies = policies
        self.classifier = classifier
        self.moderation_fail_open = moderation_fail_open
        self.pii_hold_chars = pii_hold_chars
        # Verdicts awaited in the background (moderation at flag); the loop holds tasks weakly.
        self._pending: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> Guardrails:
        classifier = None
        if settings.moderation_url:
            classifier = Classifier(
                settings.moderation_url,
                settings.moderation_timeout_seconds,
                settings.moderation_token,
            )
        return cls(
            Policies.load(settings.guardrails_file),
            classifier,
            moderation_fail_open=settings.moderation_fail == "open",
            pii_hold_chars=settings.guardrails_pii_hold_chars,
        )

    def policy(self, tenant: str) -> Policy:
        return self.policies.of(tenant)

    async def check_input(self, tenant: str, text: str) -> str:
        """The user's ``text`` as it may go on (normalised), or :class:`GuardrailBlocked`
        (422); :class:`Unavailable` (503) when moderation fails closed."""
        policy = self.policies.of(tenant)
        if policy.unicode != "off":
            normalised = normalise(text)
            hidden = tuple(k for k in normalised.kinds if k != "compatibility_form")
            if hidden and policy.unicode == "block":
                for kind in hidden:
                    record("unicode", kind, "blocked", source="input")
                raise GuardrailBlocked("unicode", hidden)
            for kind in normalised.kinds:
                record("unicode", kind, "normalised", source="input")
            text = normalised.text
        if policy.injection != "off":
            found = scan(text)
            action = "blocked" if policy.injection == "block" else "flagged"
            for kind in found:
                record("injection", kind, action, source="input")
            if found and policy.injection == "block":
                raise GuardrailBlocked("injection", found)
        if policy.moderation == "block" and self.classifier is not None:
            await self._moderate(self.classifier, tenant, text, policy)
        elif policy.moderation == "flag" and self.classifier is not None:
            # Only recorded: the message does not wait for the verdict.
            task = asyncio.create_task(self._moderate(self.classifier, tenant, text, policy))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return text

    async def _moderate(
        self, classifier: Classifier, tenant: str, text: str, policy: Policy
    ) -> None:
        block = policy.moderation == "block"
        try:
            verdict = await classifier.classify(text, tenant)
        except ClassifierUnavailable:
            if block and not self.moderation_fail_open:
                record("moderation", "unavailable", "blocked", source="input")
                raise Unavailable(
                    "the moderation service did not answer; send the message again shortly",
                    code="moderation_unavailable",
                ) from None
            record("moderation", "unavailable", "allowed", source="input")
            return
        if not verdict.flagged:
            return
        categories = " ".join(verdict.categories)[:200]
        record(
            "moderation",
            "flagged",
            "blocked" if block else "flagged",
            source="input",
            categories=categories,
        )
        if block:
            raise GuardrailBlocked("moderation", verdict.categories or ("flagged",))

    def answer(self, tenant: str) -> AnswerGuard | None:
        """The guard of one streamed answer, or None when the tenant's ``pii`` guard is off."""
        level = self.policies.of(tenant).pii
        if level == "off":
            return None
        return AnswerGuard(level == "block", self.pii_hold_chars)

    def shown(self, tenant: str, message: dict[str, Any]) -> dict[str, Any]:
        """A stored message as the API shows it: an answer's personal data redacted when the
        tenant's ``pii`` guard blocks (the stored copy is kept as written)."""
        if message.get("role") != "assistant" or self.policies.of(tenant).pii != "block":
            return message
        content, kinds = pii.redact(message["content"])
        if kinds:
            message = {**message, "content": content}
        return message

    async def aclose(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self.classifier is not None:
            await self.classifier.aclose()


class AnswerGuard:
    """The ``pii`` guard of one streamed answer.

    With ``redact`` (the ``block`` level), each ``delta`` passes through a
    :class:`~parley_gateway.guardrails.pii.StreamRedactor` (held back while it may still grow
    into an item, redacted when it is one) and the ``done`` message's content is redacted
    whole. Without (``flag``), events pass as they come and the answer is scanned once, when
    it ends; what was found is recorded either way.
    """

    def __init__(self, redact: bool, hold_chars: int) -> None:
        self.redact = redact
        self.redactor = pii.StreamRedactor(hold_chars) if redact else None
        self.parts: list[str] = []
        self._recorded = 0

    def events(self, name: str, data: dict[str, Any]) -> list[Event]:
        """The events to send in place of the turn's event ``name``: none while a delta's
        text is held back, the held text first before any other event."""
        if self.redactor is None:
            if name == "delta":
                self.parts.append(data["text"])
            elif name == "done":
                self._record(f.kind for f in pii.find(data["message"].get("content") or ""))
            elif name == "error":
                self._record(f.kind for f in pii.find("".join(self.parts)))
            return [(name, data)]
        if name == "delta":
            self.parts.append(data["text"])
            return self._shown(self.redactor.feed(data["text"]))
        out = self._shown(self.redactor.flush())
        if name == "done":
            content, kinds = pii.redact(data["message"].get("content") or "")
            if not self.parts:  # a replayed answer: nothing streamed, nothing counted yet
                self._record(kinds)
            data = {**data, "message": {**data["message"], "content": content}}
        out.append((name, data))
        return out

    def _shown(self, text: str) -> list[Event]:
        assert self.redactor is not None
        new = self.redactor.found[self._recorded :]
        self._recorded += len(new)
        self._record(new)
        return [("delta", {"text": text})] if text else []

    def _record(self, kinds: Iterable[str]) -> None:
        action = "redacted" if self.redact else "flagged"
        for kind in kinds:
            record("pii", kind, action, source="answer")

"""Guardrails on what users send and what answers show, per tenant (``edge.py`` applies them).

- ``policy.py``: off / flag / block per guard and tenant, from ``GUARDRAILS_FILE``;
- ``pii.py``: personal data and secrets found and redacted, in a whole text or as it streams;
- ``moderation.py``: the hook to an external classifier;
- ``logs.py``: the logging filter that redacts what ``pii.py`` finds in every log line;
- ``edge.py``: :class:`Guardrails`, the one place they are applied.

Normalisation and the prompt-injection rules are shared with conversation, which marks the
passages they flag: :mod:`parley_runtime.guardrails`.
"""

from parley_gateway.guardrails.edge import AnswerGuard, GuardrailBlocked, Guardrails
from parley_gateway.guardrails.policy import Policies, Policy

__all__ = ["AnswerGuard", "GuardrailBlocked", "Guardrails", "Policies", "Policy"]

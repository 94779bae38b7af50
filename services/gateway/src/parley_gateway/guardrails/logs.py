"""Log redaction: personal data and secrets (``pii.py``) never reach a log line.

:class:`RedactingFilter` rewrites each record before it is formatted: its message (arguments
merged in) and every string passed through ``extra=``. Exception tracebacks are left as they
are: they hold code and error text, not request bodies, and the error envelope never shows them.
"""

from __future__ import annotations

import logging

from parley_gateway.guardrails import pii

# Attributes every LogRecord has; anything else came through `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class RedactingFilter(logging.Filter):
    """Replaces personal data and secrets in a record with ``[redacted:<kind>]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted, kinds = pii.redact(message)
        if kinds:
            record.msg, record.args = redacted, None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                cleaned, found = pii.redact(value)
                if found:
                    setattr(record, key, cleaned)
        return True


def install_log_redaction() -> RedactingFilter:
    """Add the filter to every handler of the root logger (where every record ends up)."""
    redacting = RedactingFilter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(redacting)
    return redacting

"""Logs with the request id, trace id and span id of the request being served: JSON lines
for a log store (the default), or text lines for a terminal (``LOG_FORMAT=text``)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from parley_runtime.context import principal_var, request_id_var

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _ids() -> dict[str, str]:
    """The request's ids: request id, tenant, and the current span's trace and span ids."""
    ids: dict[str, str] = {}
    request_id = request_id_var.get()
    if request_id:
        ids["request_id"] = request_id
    principal = principal_var.get()
    if principal is not None:
        ids["tenant_id"] = principal.tenant_id
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        ids["trace_id"] = format(span_context.trace_id, "032x")
        ids["span_id"] = format(span_context.span_id, "016x")
    return ids


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, ids, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_ids())
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """One line: time, level, logger, message, then the ids and extras as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        fields = _ids()
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                fields[key] = str(value)
        line = f"{at} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(service: str, level: str = "INFO", log_format: str = "json") -> None:
    """Send every logger's records to stderr, as JSON lines or (``text``) plain lines."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = TextFormatter() if log_format == "text" else JsonFormatter(service)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access", "aiosqlite", "sqlalchemy.engine"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

"""Logs name the span they were written in; database pools are measured; with tracing off,
no span is made."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import REGISTRY
from sqlalchemy import text

from parley_runtime import db, telemetry
from parley_runtime.logs import JsonFormatter, TextFormatter

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331


def _record() -> logging.LogRecord:
    return logging.LogRecord("parley.test", logging.WARNING, __file__, 1, "slow", (), None)


def _in_span() -> NonRecordingSpan:
    return NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, True, TraceFlags(1)))


def test_json_and_text_lines_carry_the_trace_and_span_ids() -> None:
    with trace.use_span(_in_span()):
        line = json.loads(JsonFormatter("test").format(_record()))
        text_line = TextFormatter().format(_record())
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["span_id"] == "b7ad6b7169203331"
    assert "trace_id=0af7651916cd43dd8448eb211c80319c" in text_line
    assert "span_id=b7ad6b7169203331" in text_line
    assert " WARNING parley.test: slow " in text_line


def test_a_line_outside_any_span_has_no_ids() -> None:
    assert "trace_id" not in json.loads(JsonFormatter("test").format(_record()))
    assert "trace_id" not in TextFormatter().format(_record())


def test_without_tracing_no_span_no_exemplar_no_traceparent() -> None:
    assert not telemetry.tracing()
    with telemetry.span(trace.get_tracer("test"), "work") as span:
        assert span is trace.INVALID_SPAN
    with trace.use_span(_in_span()):
        assert telemetry.exemplar() is None  # no SDK: nothing is exported to link to
        assert telemetry.traceparent() == (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        )
    assert telemetry.traceparent() is None


def test_a_stored_traceparent_becomes_a_link() -> None:
    (link,) = telemetry.links("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert (link.context.trace_id, link.context.span_id) == (TRACE_ID, SPAN_ID)
    assert telemetry.links(None) == []
    assert telemetry.links("not a traceparent") == []


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.asyncio
async def test_the_pool_reports_its_connections_limit_and_waits(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path}/pool.db", pool_size=3, max_overflow=2)
    limit_before = _sample("parley_db_pool_limit")
    waits_before = _sample("parley_db_pool_wait_seconds_count")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            assert _sample("parley_db_pool_connections", state="in_use") >= 1
        assert _sample("parley_db_pool_connections", state="idle") >= 1
        assert _sample("parley_db_pool_wait_seconds_count") == waits_before + 1
        assert limit_before >= 5  # this engine's 3 + 2, with any other engine still alive
    finally:
        await engine.dispose()

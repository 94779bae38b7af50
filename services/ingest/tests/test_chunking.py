"""Parsing and chunking: sizes, overlap, sections, stable order."""

from __future__ import annotations

import itertools

import pytest

from parley_ingest.chunking import chunk_text
from parley_ingest.parsing import html_to_text, to_text
from parley_runtime.errors import InvalidArgument

HANDBOOK = """# Handbook

Welcome to the company.

## Leave

Employees have 25 days of paid leave a year. Unused days expire in March.

## Travel

Book trains for journeys under 500 km.
"""


def test_sections_carry_their_heading_path() -> None:
    chunks = chunk_text(HANDBOOK, size=60, overlap=0)
    by_section: dict[str | None, str] = {}
    for c in chunks:
        key = c.metadata.get("section")
        by_section[key] = by_section.get(key, "") + c.text
    assert "25 days of paid leave" in by_section["Handbook > Leave"]
    assert by_section["Handbook > Travel"].startswith("Travel")
    assert [c.position for c in chunks] == list(range(len(chunks)))


def test_chunks_respect_the_size_and_overlap() -> None:
    text = " ".join(f"Sentence number {i} says something useful." for i in range(200))
    chunks = chunk_text(text, size=400, overlap=60)
    assert len(chunks) > 10
    assert all(len(c.text) <= 400 + 60 + 1 for c in chunks)
    for before, after in itertools.pairwise(chunks):
        assert after.text[:30] in before.text  # the next chunk begins with the last one's tail
    joined = " ".join(c.text for c in chunks)
    assert all(f"Sentence number {i} " in joined for i in range(200))


def test_a_word_longer_than_a_chunk_is_still_cut() -> None:
    chunks = chunk_text("x" * 1000, size=300, overlap=0)
    assert all(len(c.text) <= 300 for c in chunks)
    assert sum(len(c.text) for c in chunks) == 1000


def test_empty_text_has_no_chunks() -> None:
    assert chunk_text("\n\n   \n") == []


def test_html_becomes_visible_text_with_headings() -> None:
    html = (
        "<html><head><title>x</title><style>p{}</style></head><body><h2>Leave</h2>"
        "<p>25 &amp; more days.</p><script>alert(1)</script><ul><li>One</li><li>Two</li></ul>"
        "</body></html>"
    )
    assert html_to_text(html) == "## Leave\n\n25 & more days.\n\nOne\n\nTwo"


def test_bad_bytes_and_types_are_refused_clearly() -> None:
    with pytest.raises(InvalidArgument, match="not UTF-8 text"):
        to_text(b"\xff\xfe\x00bad", "text/plain")
    with pytest.raises(InvalidArgument, match="use one of text/plain"):
        to_text(b"%PDF-1.7", "application/pdf")
    assert to_text("é\r\nok".encode(), "text/plain; charset=utf-8") == "é\nok"

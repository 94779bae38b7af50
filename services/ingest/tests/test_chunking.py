"""Chunking: sizes, overlap, headings, empty documents, stable ids."""

from __future__ import annotations

import itertools

import pytest

from parley_ingest.chunking import chunk_id, chunk_text

HANDBOOK = """# Handbook

Welcome to the company.

## Leave

Employees have 25 days of paid leave a year. Unused days expire in March.

## Travel

Book trains for journeys under 500 km.
"""

LONG = " ".join(f"Sentence number {i} says something useful." for i in range(200))


def test_sections_carry_their_heading_path() -> None:
    chunks = chunk_text(HANDBOOK, size=60, overlap=0)
    by_section: dict[str | None, str] = {}
    for c in chunks:
        key = c.metadata.get("section")
        by_section[key] = by_section.get(key, "") + c.text
    assert "25 days of paid leave" in by_section["Handbook > Leave"]
    assert by_section["Handbook > Travel"].startswith("Travel")
    assert [c.position for c in chunks] == list(range(len(chunks)))


def test_a_chunk_never_spans_two_sections() -> None:
    chunks = chunk_text(HANDBOOK, size=1000, overlap=100)
    assert [c.metadata["section"] for c in chunks] == [
        "Handbook",
        "Handbook > Leave",
        "Handbook > Travel",
    ]


def test_paragraphs_are_packed_together_up_to_the_size() -> None:
    text = "\n\n".join(f"Paragraph {i} is short." for i in range(10))
    [chunk] = chunk_text(text, size=1000, overlap=0)
    assert chunk.text.split("\n\n") == [f"Paragraph {i} is short." for i in range(10)]


@pytest.mark.parametrize(("size", "overlap"), [(400, 60), (200, 0), (1200, 150), (300, 149)])
def test_chunks_never_exceed_the_size_overlap_included(size: int, overlap: int) -> None:
    chunks = chunk_text(LONG, size=size, overlap=overlap)
    assert len(chunks) > 1
    assert all(len(c.text) <= size for c in chunks)
    joined = " ".join(c.text for c in chunks)
    assert all(f"Sentence number {i} " in joined for i in range(200))


def test_each_chunk_begins_with_the_tail_of_the_one_before() -> None:
    chunks = chunk_text(LONG, size=400, overlap=60)
    for before, after in itertools.pairwise(chunks):
        assert after.text[:30] in before.text[-60:]


def test_no_overlap_means_no_repeated_text() -> None:
    chunks = chunk_text(LONG, size=400, overlap=0)
    assert " ".join(c.text for c in chunks) == LONG


def test_a_word_longer_than_a_chunk_is_still_cut() -> None:
    chunks = chunk_text("x" * 1000, size=300, overlap=0)
    assert all(len(c.text) <= 300 for c in chunks)
    assert sum(len(c.text) for c in chunks) == 1000


def test_empty_text_has_no_chunks() -> None:
    assert chunk_text("") == []
    assert chunk_text("\n\n   \n") == []
    assert chunk_text("# \n\n") == []


def test_plain_text_lines_starting_with_a_hash_are_not_headings() -> None:
    text = "# not a heading, a shell comment\n\necho hello"
    [chunk] = chunk_text(text, markdown=False)
    assert chunk.metadata == {}
    assert chunk.text.startswith("# not a heading")


def test_headings_inside_code_blocks_are_code() -> None:
    text = "# Setup\n\n```\n# install\npip install parley\n```\n"
    assert {c.metadata["section"] for c in chunk_text(text)} == {"Setup"}


def test_the_same_text_always_gives_the_same_chunks_and_ids() -> None:
    first = chunk_text(HANDBOOK + LONG, size=300, overlap=50)
    again = chunk_text(HANDBOOK + LONG, size=300, overlap=50)
    assert first == again
    ids = [chunk_id("doc_1", 3, c.position) for c in first]
    assert ids[0] == "doc_1:v3:0"
    assert len(set(ids)) == len(ids)


def test_an_overlap_of_half_the_size_or_more_is_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text(LONG, size=100, overlap=50)


def test_a_paged_text_gives_each_chunk_the_pages_it_spans() -> None:
    pages = [
        "Leave. " + " ".join(f"Leave rule {i} applies." for i in range(30)),
        "",  # a page with no text: the numbering still counts it
        "Travel. Trains in second class.",
    ]
    chunks = chunk_text("\f".join(pages), size=300, overlap=40, markdown=False, paged=True)
    assert [c.metadata for c in chunks] == [
        {"page": "1"},
        {"page": "1"},
        {"page": "1", "page_end": "3"},  # starts on page 1, ends on page 3
    ]
    assert chunks[-1].text.endswith("Leave rule 29 applies.\n\nTravel. Trains in second class.")
    assert all("\f" not in c.text for c in chunks)
    # Travel alone, on a page of its own: its chunk says so.
    [travel] = chunk_text("\f\fTravel.", markdown=False, paged=True)
    assert travel.metadata == {"page": "3"}
    # Without pages, a form feed is only a line break.
    assert [c.metadata for c in chunk_text("a\fb", markdown=False)] == [{}]

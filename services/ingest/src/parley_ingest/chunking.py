"""Cutting a document's text into chunks for retrieval. Pure: no I/O.

Markdown headings start sections, and every chunk records the heading path it falls under
(``section``), so a passage keeps its context (plain text has no headings: a line starting
with ``#`` there is just text). Within a section, paragraphs are packed into chunks of at most
``size`` characters; a paragraph longer than that is cut at sentence ends, then at spaces.
Each chunk after the first of a section begins with the last ``overlap`` characters of the
one before (cut at a word boundary), so a fact split across a boundary is still found whole;
the overlap counts toward ``size``, which is a hard ceiling (retrieval refuses longer chunks).

A paged text (a PDF's, pages separated by a form feed) gives every chunk the page it starts on
(``page``, from 1) and, when it runs onto later pages, the page it ends on (``page_end``): a
citation can then send the reader to the page. A page break also ends a paragraph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PAGE_BREAK = "\f"
_HEADING = re.compile(r"^(#{1,6})(?:\s+(.*?))?\s*#*\s*$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, slots=True)
class TextChunk:
    """One passage of a document: its place in the document, its text, its metadata."""

    position: int
    text: str
    metadata: dict[str, str] = field(default_factory=dict)


def chunk_id(document_id: str, version: int, position: int) -> str:
    """The chunk's id in retrieval: the same document version always yields the same ids, so
    indexing a version again overwrites rather than duplicates."""
    return f"{document_id}:v{version}:{position}"


@dataclass(frozen=True, slots=True)
class _Paragraph:
    text: str
    page: int  # the page it starts on; 0 in a text without pages


def _lines(text: str, paged: bool) -> list[tuple[str, int]]:
    """The text's lines, each with its page (from 1 in a paged text, else 0); a page break
    is a line of its own, (PAGE_BREAK, page after it)."""
    if not paged:
        return [(line, 0) for line in text.replace(PAGE_BREAK, "\n").split("\n")]
    lines: list[tuple[str, int]] = []
    for number, page in enumerate(text.split(PAGE_BREAK), start=1):
        if number > 1:
            lines.append((PAGE_BREAK, number))
        lines += [(line, number) for line in page.split("\n")]
    return lines


def _sections(text: str, markdown: bool, paged: bool) -> list[tuple[str, list[_Paragraph]]]:
    """(heading path, paragraphs) in document order."""
    path: list[tuple[int, str]] = []
    sections: list[tuple[str, list[_Paragraph]]] = [("", [])]
    paragraph: list[str] = []
    page = 1 if paged else 0

    def flush() -> None:
        if paragraph:
            sections[-1][1].append(_Paragraph(" ".join(" ".join(paragraph).split()), page))
            paragraph.clear()

    in_code = False
    for line, line_page in _lines(text, paged):
        if line == PAGE_BREAK:
            flush()
            page = line_page
            continue
        if not paragraph:
            page = line_page or page
        if markdown and line.strip().startswith("```"):
            in_code = not in_code
        heading = _HEADING.match(line) if markdown and not in_code else None
        if heading and not (heading.group(2) or "").strip():
            flush()  # an empty heading ("#") only separates paragraphs
        elif heading:
            flush()
            level, title = len(heading.group(1)), heading.group(2).strip()
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
            sections.append((" > ".join(t for _, t in path), [_Paragraph(title, page)]))
        elif not line.strip() and not in_code:
            flush()
        else:
            paragraph.append(line.strip())
    flush()
    return [(name, paras) for name, paras in sections if any(p.text for p in paras)]


def _pieces(paragraph: str, size: int) -> list[str]:
    """A paragraph cut to at most ``size`` characters, at sentences, then at spaces."""
    if len(paragraph) <= size:
        return [paragraph]
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE.split(paragraph):
        while len(sentence) > size:
            cut = sentence.rfind(" ", 0, size)
            cut = cut if cut > size // 2 else size
            head, sentence = sentence[:cut].strip(), sentence[cut:].strip()
            if current:
                pieces.append(current)
                current = ""
            pieces.append(head)
        if current and len(current) + 1 + len(sentence) > size:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return pieces


def _tail(text: str, overlap: int) -> str:
    if overlap <= 0 or len(text) <= overlap:
        return text if overlap > 0 else ""
    tail = text[-overlap:]
    space = tail.find(" ")
    return tail[space + 1 :] if 0 <= space < len(tail) - 1 else tail


def chunk_text(
    text: str,
    size: int = 1200,
    overlap: int = 150,
    *,
    markdown: bool = True,
    paged: bool = False,
) -> list[TextChunk]:
    """Chunks of at most ``size`` characters, overlap included, in document order."""
    if size <= 0 or not 0 <= overlap < size // 2:
        raise ValueError("chunk_text: need size > 0 and 0 <= overlap < size / 2")
    # Pieces leave room for the overlap (and its separating space) carried into the next chunk.
    budget = size - overlap - 1 if overlap else size
    chunks: list[TextChunk] = []
    for section, paragraphs in _sections(text, markdown, paged):
        pieces = [(piece, p.page) for p in paragraphs for piece in _pieces(p.text, budget)]
        current = ""
        pages = (0, 0)  # the pages the current chunk's own pieces start on: first, last
        for piece, page in pieces:
            if current and len(current) + 2 + len(piece) > size:
                chunks.append(_chunk(len(chunks), current, section, pages))
                prefix = _tail(current, overlap)
                current = f"{prefix} {piece}" if prefix else piece
                pages = (page, page)
            else:
                current = f"{current}\n\n{piece}" if current else piece
                pages = (pages[0] or page, page)
        if current:
            chunks.append(_chunk(len(chunks), current, section, pages))
    return chunks


def _chunk(position: int, text: str, section: str, pages: tuple[int, int]) -> TextChunk:
    metadata = {"section": section} if section else {}
    first, last = pages
    if first:
        metadata["page"] = str(first)
        if last != first:
            metadata["page_end"] = str(last)
    return TextChunk(position, text, metadata)

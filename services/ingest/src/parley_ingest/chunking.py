"""Cutting a document's text into chunks for retrieval. Pure: no I/O.

Markdown headings start sections, and every chunk records the heading path it falls under
(``section``), so a passage keeps its context. Within a section, paragraphs are packed up to
``size`` characters; a paragraph longer than that is cut at sentence ends, then at spaces.
Each chunk after the first of a section begins with the last ``overlap`` characters of the
one before (cut at a word boundary), so a fact split across a boundary is still found whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, slots=True)
class TextChunk:
    position: int
    text: str
    metadata: dict[str, str] = field(default_factory=dict)


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """(heading path, paragraphs) in document order."""
    path: list[tuple[int, str]] = []
    sections: list[tuple[str, list[str]]] = [("", [])]
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            sections[-1][1].append(" ".join(" ".join(paragraph).split()))
            paragraph.clear()

    in_code = False
    for line in text.split("\n"):
        if line.strip().startswith("```"):
            in_code = not in_code
        heading = None if in_code else _HEADING.match(line)
        if heading:
            flush()
            level, title = len(heading.group(1)), heading.group(2).strip()
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
            sections.append((" > ".join(t for _, t in path), [title]))
        elif not line.strip() and not in_code:
            flush()
        else:
            paragraph.append(line.strip())
    flush()
    return [(name, paras) for name, paras in sections if any(p for p in paras)]


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


def chunk_text(text: str, size: int = 1200, overlap: int = 150) -> list[TextChunk]:
    """Chunks of at most about ``size`` characters (plus overlap), in order."""
    chunks: list[TextChunk] = []
    for section, paragraphs in _sections(text):
        pieces = [piece for p in paragraphs for piece in _pieces(p, size)]
        current = ""
        previous = ""
        for piece in pieces:
            if current and len(current) + 2 + len(piece) > size:
                chunks.append(_chunk(len(chunks), current, section))
                previous = current
                current = piece
                prefix = _tail(previous, overlap)
                if prefix:
                    current = f"{prefix} {current}"
            else:
                current = f"{current}\n\n{piece}" if current else piece
        if current:
            chunks.append(_chunk(len(chunks), current, section))
    return chunks


def _chunk(position: int, text: str, section: str) -> TextChunk:
    return TextChunk(position, text, {"section": section} if section else {})

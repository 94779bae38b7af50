"""Real document files built in memory, for tests and benchmarks: PDFs written with pypdf (a
text layer in the standard Helvetica font, or none), Word documents with python-docx. Nothing
is downloaded or committed as a binary.
"""

from __future__ import annotations

import io

from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject


def _escaped(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf(pages: list[str], *, password: str | None = None, owner_password: str = "") -> bytes:
    """A PDF with one page per item of ``pages``, each line of it a line of text.

    An empty string makes a page with no text (a rectangle drawn instead, as a scan's image
    would be). ``password`` encrypts it so that it opens only with that password;
    ``owner_password`` alone encrypts it against editing but opens without one.
    """
    writer = PdfWriter()
    font = writer._add_object(  # the standard font every reader has
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for text in pages:
        page = writer.add_blank_page(612, 792)
        if text:
            ops = ["BT", "/F1 11 Tf", "14 TL", "72 740 Td"]
            ops += [f"({_escaped(line)}) Tj T*" for line in text.split("\n")]
            ops.append("ET")
        else:
            ops = ["0.5 g", "72 72 468 648 re", "f"]
        stream = DecodedStreamObject()
        stream.set_data("\n".join(ops).encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
    if password is not None or owner_password:
        writer.encrypt(
            user_password=password or "",
            owner_password=owner_password or "owner",
            algorithm="RC4-128",  # needs no cryptography library to open
        )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx(
    blocks: list[tuple[str, str] | list[list[str]]],
) -> bytes:
    """A Word document of ``blocks`` in order: ``("title" | "h1".."h3" | "p" | "li", text)``
    for a paragraph of that kind, a list of rows (lists of cell texts) for a table."""
    import docx as python_docx

    document = python_docx.Document()
    for block in blocks:
        if isinstance(block, list):
            table = document.add_table(rows=len(block), cols=max(len(row) for row in block))
            for r, row in enumerate(block):
                for c, text in enumerate(row):
                    table.cell(r, c).text = text
            continue
        kind, text = block
        if kind == "title":
            document.add_heading(text, 0)
        elif kind in ("h1", "h2", "h3"):
            document.add_heading(text, int(kind[1]))
        elif kind == "li":
            document.add_paragraph(text, style="List Bullet")
        else:
            document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()

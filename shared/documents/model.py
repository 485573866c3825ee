"""The two values the document layer hands out: a loaded ``Document`` and its ``Chunk``s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DocFormat = Literal["markdown", "text", "html", "pdf"]


@dataclass(frozen=True)
class Chunk:
    """A bounded, contiguous slice of a document's text with the headings above it.

    ``text == document.text[start:start + len(text)]`` always holds.
    """

    text: str
    heading_path: tuple[str, ...]
    position: int
    start: int

    @property
    def end(self) -> int:
        """Offset just past the chunk in ``Document.text``."""
        return self.start + len(self.text)


@dataclass
class Document:
    """A loaded document: normalised full text plus what is known about where it came from.

    ``text`` is Markdown for Markdown and HTML sources (HTML converted), plain text for text
    files, and the pages' text joined by blank lines for PDFs. ``pages`` holds, for a PDF, one
    ``(page_number, offset_in_text)`` pair per page that has text, in order.
    """

    source: str
    title: str
    format: DocFormat
    text: str
    modified_at: float | None
    content_hash: str
    warnings: list[str] = field(default_factory=list)
    pages: list[tuple[int, int]] = field(default_factory=list)

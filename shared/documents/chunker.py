"""Heading-aware, sentence-aware chunking with CJK support and bounded chunk sizes.

A document is first cut into sections (Markdown headings, PDF pages, or the whole text),
which chunks never cross; a tiny section is merged into the section that follows it when that
one lies beneath it (a chapter heading directly followed by its first question, say).

Inside a section, the text is cut into pieces at every paragraph, list item and sentence end
(``。！？；…`` and their fullwidth kin, ``.!?`` before a space); a piece still longer than
a chunk is cut further at clause marks (``，、：``, ``,;:`` before a space), line breaks,
spaces and, as a last resort, hard, so a 20,000-character Chinese paragraph with no newline
still becomes many bounded chunks. Pieces are packed into chunks; when a chunk is full it ends
at the strongest boundary in its second half (between blocks, then paragraphs, list items,
sentences, ...), so whole paragraphs and sentences stay together where they can. Each chunk
after the first of a section starts with up to ``overlap`` characters of the one before,
snapped to a sentence, clause or word boundary where there is one.

Guarantees: every chunk is an exact slice of ``Document.text`` no longer than ``size``; chunks
of a section overlap by at most ``overlap`` characters; every non-whitespace character of the
text is in some chunk; no chunk crosses a section boundary.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

from ..errors import BadInput
from .model import Chunk, Document
from .structure import CODE_KINDS, Block, Section, parse_sections

logger = logging.getLogger(__name__)

_CLOSERS = "”’」』）》〉】〕］｝\"')\\]}"
_CJK_END = "。！？；｡︒﹒﹗﹖﹔…‥．"
_CJK_CLAUSE = "，、：﹐﹑︐︑､"

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_LIST_ITEM = re.compile(r"\n(?=[ \t]*(?:[-*+•]|\d{1,3}[.)])[ \t])")
_SENTENCE = re.compile(rf"(?:[{_CJK_END}]+|[.!?]+(?=\s))[{_CLOSERS}]*\s*")
_CLAUSE = re.compile(rf"(?:[{_CJK_CLAUSE}]+|[,;:](?=\s))[{_CLOSERS}]*\s*")
_NEWLINE = re.compile(r"\n+")
_SPACE = re.compile(r"\s+")

# Boundary strength, strongest first: a chunk that must end ends at the strongest one it has.
_BLOCK, _HARD = 0, 7
# (rank, pattern, always): "always" levels cut every piece; the others only pieces too long.
_Level = tuple[int, re.Pattern[str], bool]
_PROSE_LEVELS: tuple[_Level, ...] = (
    (1, _PARAGRAPH, True),
    (2, _LIST_ITEM, True),
    (3, _SENTENCE, True),
    (4, _CLAUSE, False),
    (5, _NEWLINE, False),
    (6, _SPACE, False),
)
_CODE_LEVELS: tuple[_Level, ...] = ((1, _PARAGRAPH, True), (5, _NEWLINE, True), (6, _SPACE, False))
_WHOLE_LEVELS: tuple[_Level, ...] = ((5, _NEWLINE, False), (6, _SPACE, False))
_LINE_KINDS = CODE_KINDS | {"table", "html_block"}
_OVERLAP_LEVELS = (_SENTENCE, _CLAUSE, _SPACE)

# A section shorter than this fraction of ``size`` is merged into a following sub-section.
_TINY_FRACTION = 8


@dataclass(frozen=True)
class _Span:
    """A half-open character range ``[start, end)`` of the document text."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def chunk_document(doc: Document, *, size: int, overlap: int) -> list[Chunk]:
    """Cut ``doc`` into chunks of at most ``size`` characters sharing up to ``overlap``.

    ``overlap`` must be smaller than ``size``; it is capped at half of ``size`` so that every
    chunk brings at least as much new text as it repeats.
    """
    if size < 1:
        raise BadInput(
            f"chunk size must be at least 1 character, got {size}.",
            hint="Set kb.chunk_size to a positive number of characters.",
        )
    if overlap < 0 or overlap >= size:
        raise BadInput(
            f"chunk overlap {overlap} must be at least 0 and smaller than the chunk size {size}.",
            hint="Set kb.chunk_overlap below kb.chunk_size (e.g. an eighth of it).",
        )
    overlap = min(overlap, size // 2)

    chunks: list[Chunk] = []
    for path, blocks in _sections(doc, size):
        for piece in _chunk_section(doc.text, blocks, size, overlap):
            chunks.append(Chunk(doc.text[piece.start : piece.end], path, len(chunks), piece.start))
    logger.debug("%s: %d chunks (size %d, overlap %d)", doc.source, len(chunks), size, overlap)
    return chunks


def _sections(doc: Document, size: int) -> Iterator[tuple[tuple[str, ...], list[Block]]]:
    """The document's sections as (heading path, blocks), tiny ones merged forward."""
    fallback = (doc.title,) if doc.title else ()
    if doc.format == "pdf" and doc.pages:
        bounds = [offset for _, offset in doc.pages] + [len(doc.text)]
        for (number, offset), end in zip(doc.pages, bounds[1:], strict=True):
            yield (f"page {number}",), _paragraphs(doc.text, offset, end)
        return
    if doc.format not in ("markdown", "html"):
        yield fallback, _paragraphs(doc.text, 0, len(doc.text))
        return

    tiny = max(1, size // _TINY_FRACTION)
    pending: list[Section] = []
    for section in parse_sections(doc.text):
        if pending and not _is_beneath(section, pending[-1]):
            yield _merge(pending, fallback)
            pending = []
        pending.append(section)
        if len(doc.text[section.start : section.end].strip()) >= tiny:
            yield _merge(pending, fallback)
            pending = []
    if pending:
        yield _merge(pending, fallback)


def _is_beneath(section: Section, parent: Section) -> bool:
    """True when ``section`` sits under ``parent``'s headings (a sub-section of it)."""
    depth = len(parent.headings)
    return len(section.headings) > depth and section.headings[:depth] == parent.headings


def _merge(group: list[Section], fallback: tuple[str, ...]) -> tuple[tuple[str, ...], list[Block]]:
    """One merged section: the deepest heading path of ``group`` and all its blocks."""
    return group[-1].path or fallback, [block for section in group for block in section.blocks]


def _paragraphs(text: str, start: int, end: int) -> list[Block]:
    """Blocks of plain text: paragraphs separated by blank lines, partitioning the range."""
    cuts = [m.end() for m in _PARAGRAPH.finditer(text, start, end) if m.end() < end]
    bounds = [start, *cuts, end]
    return [Block(a, b, "paragraph") for a, b in pairwise(bounds) if b > a]


@dataclass(frozen=True)
class _Piece:
    """A run of text between two cut points; ``rank`` is the strength of the cut after it."""

    start: int
    end: int
    rank: int


def _chunk_section(text: str, blocks: list[Block], size: int, overlap: int) -> Iterator[_Span]:
    """Chunks of one section: cut into pieces, pack them, add the overlap, trim whitespace."""
    budget = size - overlap
    pieces: list[_Piece] = []
    for block in blocks:
        if block.end > block.start:
            if block.kind in _LINE_KINDS:
                levels = _CODE_LEVELS
            elif block.kind == "heading":
                levels = _WHOLE_LEVELS
            else:
                levels = _PROSE_LEVELS
            _cut(text, block.start, block.end, levels, budget, _BLOCK, pieces)

    previous: _Span | None = None
    for raw in _pack(pieces, first_limit=size, limit=budget):
        packed = _trim(text, raw)
        if packed.length == 0:
            continue
        start = packed.start
        if previous is not None and overlap:
            start = _overlap_start(text, previous, packed, min(overlap, size - packed.length))
        yield _trim(text, _Span(start, packed.end))
        previous = packed


def _cut(
    text: str,
    start: int,
    end: int,
    levels: tuple[_Level, ...],
    limit: int,
    end_rank: int,
    out: list[_Piece],
) -> None:
    """Append the pieces of ``[start, end)`` to ``out``, each at most ``limit`` long."""
    if not levels or (not levels[0][2] and end - start <= limit):
        if end - start <= limit:
            out.append(_Piece(start, end, end_rank))
            return
        for a in range(start, end, limit):
            b = min(a + limit, end)
            out.append(_Piece(a, b, _HARD if b < end else end_rank))
        return
    rank, pattern, _ = levels[0]
    cuts = [m.end() for m in pattern.finditer(text, start, end)]
    bounds = [start, *(c for c in cuts if start < c < end), end]
    last = len(bounds) - 2
    for index, (a, b) in enumerate(pairwise(bounds)):
        _cut(text, a, b, levels[1:], limit, rank if index < last else end_rank, out)


def _pack(pieces: list[_Piece], *, first_limit: int, limit: int) -> Iterator[_Span]:
    """Pack pieces into spans of at most ``first_limit`` (first span) or ``limit`` (others).

    A span that cannot take the next piece ends at the strongest cut in its second half, the
    latest such cut when several are equally strong.
    """
    i, n, window = 0, len(pieces), first_limit
    while i < n:
        start = pieces[i].start
        j = i
        while j + 1 < n and pieces[j + 1].end - start <= window:
            j += 1
        if j + 1 < n:
            half = start + window // 2
            best = j
            for k in range(j, i - 1, -1):
                if pieces[k].end < half:
                    break
                if pieces[k].rank < pieces[best].rank:
                    best = k
            j = best
        yield _Span(start, pieces[j].end)
        i, window = j + 1, limit


def _overlap_start(text: str, previous: _Span, packed: _Span, allowed: int) -> int:
    """Where a chunk starts so that it repeats at most ``allowed`` chars of ``previous``."""
    if allowed <= 0:
        return packed.start
    earliest = max(previous.start + 1, packed.start - allowed)
    if earliest >= packed.start:
        return packed.start
    for level in _OVERLAP_LEVELS:
        for match in level.finditer(text, earliest, packed.start):
            if match.end() < packed.start:
                return match.end()
    return earliest


def _trim(text: str, span: _Span) -> _Span:
    """Shrink ``span`` to exclude leading and trailing whitespace."""
    start, end = span.start, span.end
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return _Span(start, end)

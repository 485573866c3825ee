"""Markdown structure from markdown-it-py tokens: sections under headings and their blocks.

Working from tokens rather than regular expressions means a ``#`` line inside a code fence or
an indented code block is never taken for a heading. Offsets are character offsets into the
text that was parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

CODE_KINDS = frozenset({"fence", "code_block"})


@dataclass(frozen=True)
class Block:
    """One top-level Markdown block (paragraph, list, fence, table, ...) as a char range."""

    start: int
    end: int
    kind: str


@dataclass
class Section:
    """The text from one heading (included) to the next top-level heading."""

    start: int
    end: int
    headings: tuple[tuple[int, str], ...]  # (level, text) from the outermost heading down
    blocks: list[Block] = field(default_factory=list)

    @property
    def path(self) -> tuple[str, ...]:
        """The heading texts from the outermost down to this section's own (empty ones left out)."""
        return tuple(text for _, text in self.headings if text)


# The first heading is looked for in this much text, enough for any real title.
_TITLE_WINDOW = 65_536


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    """Block structure only: inline parsing (half the cost) is done for heading text alone."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").disable("inline")


@lru_cache(maxsize=1)
def _inline_parser() -> MarkdownIt:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark")


def line_offsets(text: str) -> list[int]:
    """Offset of the start of each line (lines split at LF only, as markdown-it does)."""
    return [0, *(m.end() for m in re.finditer("\n", text))]


def _inline_text(token: Token) -> str:
    """Plain text of an inline token: markup dropped, code spans and image alt text kept."""
    parts: list[str] = []
    for inline in _inline_parser().parseInline(token.content):
        _collect_text(inline, parts)
    return " ".join("".join(parts).split())


def _collect_text(token: Token, parts: list[str]) -> None:
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            _collect_text(child, parts)


def parse_sections(text: str) -> list[Section]:
    """Split Markdown into sections at top-level headings; they partition ``text`` exactly.

    Text before the first heading, if any, is a section with no headings.
    """
    offsets = line_offsets(text)

    def at(line: int) -> int:
        return offsets[line] if line < len(offsets) else len(text)

    tokens = _parser().parse(text)
    sections: list[Section] = [Section(0, 0, ())]
    stack: list[tuple[int, str]] = []
    for index, token in enumerate(tokens):
        if token.level != 0 or token.map is None or token.nesting == -1:
            continue
        start, end = at(token.map[0]), at(token.map[1])
        if token.type == "heading_open":
            level = int(token.tag[1:])
            title = _inline_text(tokens[index + 1]) if index + 1 < len(tokens) else ""
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
            sections[-1].end = start
            sections.append(Section(start, start, tuple(stack)))
        sections[-1].blocks.append(Block(start, end, token.type.removesuffix("_open")))
    sections[-1].end = len(text)

    if sections[0].end == 0 and len(sections) > 1:
        sections.pop(0)
    for section in sections:
        _fill_gaps(section)
    return sections


def _fill_gaps(section: Section) -> None:
    """Stretch blocks over the blank lines between them so they partition the section."""
    if not section.blocks:
        section.blocks = [Block(section.start, section.end, "paragraph")]
        return
    filled: list[Block] = []
    cursor = section.start
    for i, block in enumerate(section.blocks):
        end = section.end if i == len(section.blocks) - 1 else section.blocks[i + 1].start
        filled.append(Block(cursor, max(end, cursor), block.kind))
        cursor = max(end, cursor)
    section.blocks = filled


def first_heading(text: str) -> str | None:
    """The text of the first level-1 heading, else of the first heading, else ``None``.

    Only the start of the text is searched (a title is at the top).
    """
    if len(text) > _TITLE_WINDOW:
        cut = text.rfind("\n", 0, _TITLE_WINDOW)
        text = text[: cut if cut > 0 else _TITLE_WINDOW]
    tokens = _parser().parse(text)
    found: str | None = None
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and index + 1 < len(tokens):
            title = _inline_text(tokens[index + 1])
            if title and token.tag == "h1":
                return title
            if title and found is None:
                found = title
    return found

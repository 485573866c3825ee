"""Helpers for the kb tests: real FAQ sections, an MCP session that validates output schemas."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import corpora

from localmcp.shared.documents import chunk_document, load_document

#: (chapter, section number) of short FAQ sections the dense tests embed, in both languages.
DENSE_SECTIONS = (
    ("basic-defs", "1.2"),
    ("getting-debian", "2.3"),
    ("pkg-basics", "7.1"),
    ("pkgtools", "8.1.1"),
    ("pkgtools", "8.1.2"),
    ("uptodate", "9.1"),
    ("kernel", "10.1"),
)
SECTION_CHARS = 500


@cache
def faq_section(chapter: str, lang: corpora.Lang, number: str) -> str:
    """The start of one FAQ section (its heading and first paragraphs), from the real page."""
    doc = load_document(corpora.faq_chapter(chapter, lang), max_bytes=50 * 2**20)
    for chunk in chunk_document(doc, size=1200, overlap=0):
        if chunk.heading_path and chunk.heading_path[-1].startswith(f"{number}. "):
            return chunk.text[:SECTION_CHARS]
    raise AssertionError(f"section {number} not found in {chapter} ({lang})")


def faq_sections() -> dict[str, str]:
    """source label -> text of every dense test section, English and Chinese."""
    out = {}
    for lang in ("en", "zh-cn"):
        for chapter, number in DENSE_SECTIONS:
            out[f"faq/{lang}/{chapter}#{number}"] = faq_section(chapter, lang, number)
    return out


def in_section(heading_path: list[str], number: str) -> bool:
    """Is a hit with this heading path inside FAQ section ``number`` (e.g. '8.1.2')?"""
    return any(h.startswith(f"{number}. ") for h in heading_path)


def write(path: Path, text: str | bytes) -> Path:
    """Create ``path`` (and its folders) with this content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path

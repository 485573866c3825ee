"""Loaders and chunker on real Debian documentation (the FAQ in English and Chinese, its PDF)."""

from __future__ import annotations

import re

import corpora
import pytest

from localmcp.shared.documents import Document, chunk_document, load_document
from localmcp.shared.textio import MIB

LIMIT = 50 * MIB
SIZE, OVERLAP = 1200, 150
# Every heading of the FAQ is a chapter title or a numbered question.
FAQ_HEADING = re.compile(r"^(Chapter \d+\. |第 \d+ 章 |\d+(\.\d+)*\. )")


def _cjk_share(text: str) -> float:
    letters = [ch for ch in text if ch.isalpha()]
    return sum(1 for ch in letters if "\u4e00" <= ch <= "\u9fff") / max(1, len(letters))


@pytest.mark.parametrize("lang", ["en", "zh-cn"])
def test_every_faq_chapter_loads_with_numbered_headings_and_bounded_chunks(lang: str) -> None:
    total = 0
    for path in corpora.faq_chapters(lang):  # type: ignore[arg-type]
        doc = load_document(path, max_bytes=LIMIT)
        assert doc.format == "html"
        assert FAQ_HEADING.match(doc.title), doc.title
        assert "Table of Contents" not in doc.text and "目录" not in doc.text[:200]
        chunks = chunk_document(doc, size=SIZE, overlap=OVERLAP)
        assert all(len(c.text) <= SIZE for c in chunks)
        assert all(FAQ_HEADING.match(h) for c in chunks for h in c.heading_path)
        # Chunks sit under their chapter; all but a chapter's introduction under a question.
        assert all(c.heading_path[0] == doc.title for c in chunks)
        assert sum(len(c.heading_path) >= 2 for c in chunks) >= 0.8 * len(chunks)
        total += len(chunks)
    assert total > 100


def test_english_faq_chapter_has_its_questions_as_sections() -> None:
    doc = load_document(corpora.faq_chapter("basic-defs", "en"), max_bytes=LIMIT)
    assert doc.title == "Chapter 1. Definitions and overview"
    chunks = chunk_document(doc, size=SIZE, overlap=OVERLAP)
    question = ("Chapter 1. Definitions and overview", "1.2. What is Debian GNU/Linux?")
    answer = [c for c in chunks if c.heading_path == question]
    assert answer and any("full featured" in c.text for c in answer)
    pronounce = next(c for c in chunks if c.heading_path[-1].startswith("1.7."))
    assert "pronounced Deb'-ee-en" in pronounce.text


def test_chinese_faq_chapter_has_chinese_headings_and_text() -> None:
    doc = load_document(corpora.faq_chapter("basic-defs", "zh-cn"), max_bytes=LIMIT)
    assert doc.title == "第 1 章 定义和概览"
    chunks = chunk_document(doc, size=SIZE, overlap=OVERLAP)
    question = next(c for c in chunks if c.heading_path[-1] == "1.2. 什么是 Debian GNU/Linux？")
    assert "发行版" in question.text
    assert _cjk_share(doc.text) > 0.5


def test_chinese_package_tools_chapter_keeps_commands_inside_chunks() -> None:
    doc = load_document(corpora.faq_chapter("pkgtools", "zh-cn"), max_bytes=LIMIT)
    chunks = chunk_document(doc, size=SIZE, overlap=OVERLAP)
    dpkg = [c for c in chunks if c.heading_path[-1] == "8.1.1. dpkg"]
    assert dpkg and any("dpkg --install foo_VVV-RRR.deb" in c.text for c in dpkg)


def test_faq_page_reached_through_its_alias_is_the_same_document() -> None:
    direct = load_document(corpora.faq_chapter("software", "en"), max_bytes=LIMIT)
    alias = load_document(corpora.faq_alias("software"), max_bytes=LIMIT)
    assert alias.source == direct.source
    assert alias.content_hash == direct.content_hash


@pytest.mark.parametrize(
    ("lang", "title"), [("en", "The Debian GNU/Linux FAQ"), ("zh-cn", "常见问题")]
)
def test_whole_faq_as_gzipped_plain_text_loads_and_chunks(lang: str, title: str) -> None:
    doc = load_document(corpora.faq_text(lang), max_bytes=LIMIT)  # type: ignore[arg-type]
    assert doc.format == "text"
    assert title in doc.title
    assert len(doc.text) > 80_000
    chunks = chunk_document(doc, size=SIZE, overlap=OVERLAP)
    assert len(chunks) > 60 and all(len(c.text) <= SIZE for c in chunks)
    if lang == "zh-cn":
        assert _cjk_share(doc.text) > 0.5


@pytest.fixture(scope="module")
def faq_pdf_doc() -> Document:
    return load_document(corpora.faq_pdf(), max_bytes=LIMIT)


def test_real_debian_pdf_loads_page_by_page(faq_pdf_doc: Document) -> None:
    doc = faq_pdf_doc
    assert doc.format == "pdf"
    assert doc.title == "The Debian GNU/Linux FAQ"
    numbers = [n for n, _ in doc.pages]
    assert numbers[0] == 1 and numbers[-1] == 73
    assert len(numbers) > 60  # a few versos are blank
    assert doc.warnings == []  # blank pages are not "scanned" pages
    assert "What is Debian GNU/Linux?" in doc.text


def test_real_debian_pdf_chunks_are_named_by_page(faq_pdf_doc: Document) -> None:
    chunks = chunk_document(faq_pdf_doc, size=SIZE, overlap=OVERLAP)
    assert all(len(c.heading_path) == 1 and c.heading_path[0].startswith("page ") for c in chunks)
    assert all(len(c.text) <= SIZE for c in chunks)
    pages = {int(c.heading_path[0].split()[1]) for c in chunks}
    assert pages == {n for n, _ in faq_pdf_doc.pages}

"""The labelled Debian FAQ query set of the quality bench agrees with the real corpora."""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import corpora
import pytest

from localmcp.shared.config import KBSettings
from localmcp.shared.documents import chunk_document, load_document

QUERY_SET = Path(__file__).resolve().parents[2] / "bench" / "data" / "debian_faq_queries.json"
LANGS = ("en", "zh-cn")
MIN_PER_LANG = 30
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z.+-]{1,}")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def _queries() -> list[dict[str, Any]]:
    data = json.loads(QUERY_SET.read_text("utf-8"))
    return list(data["queries"])


@cache
def _heading_paths(document: str, lang: corpora.Lang) -> frozenset[str]:
    """Every heading on some chunk's heading path, as the knowledge base chunks the page."""
    settings = KBSettings()
    doc = load_document(corpora.faq_chapter(document, lang), max_bytes=50 * 1024 * 1024)
    chunks = chunk_document(doc, size=settings.chunk_size, overlap=settings.chunk_overlap)
    return frozenset(heading for chunk in chunks for heading in chunk.heading_path)


def test_query_set_has_enough_well_formed_queries_per_language() -> None:
    queries = _queries()
    ids = [q["id"] for q in queries]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]

    per_lang = Counter(q["lang"] for q in queries)
    assert set(per_lang) == set(LANGS)
    for lang in LANGS:
        assert per_lang[lang] >= MIN_PER_LANG, (lang, per_lang[lang])
    for q in queries:
        assert q["query"].strip() and q["document"] and q["section"], q
        assert q["document"] in corpora.CHAPTERS, q


def test_queries_paraphrase_their_section_heading() -> None:
    for q in _queries():
        title = re.sub(r"^[\d.]+\s*", "", q["section"]).strip().casefold()
        assert q["query"].strip().casefold() != title, q["id"]
        if len(title) > 12:  # a one-word heading such as "dpkg" may well be in the query
            assert title not in q["query"].casefold(), q["id"]


def test_chinese_queries_are_chinese_and_some_mix_in_english_terms() -> None:
    chinese = [q["query"] for q in _queries() if q["lang"] == "zh-cn"]
    assert all(_CJK.search(text) for text in chinese)
    mixed = [text for text in chinese if _LATIN_WORD.search(text)]
    assert len(mixed) >= 10, mixed


@pytest.mark.parametrize("lang", LANGS)
def test_every_expected_section_is_a_heading_of_its_document(lang: corpora.Lang) -> None:
    missing = [
        (q["id"], q["document"], q["section"])
        for q in _queries()
        if q["lang"] == lang and q["section"] not in _heading_paths(q["document"], lang)
    ]
    assert not missing, missing


def test_query_set_spans_most_chapters() -> None:
    for lang in LANGS:
        chapters = {q["document"] for q in _queries() if q["lang"] == lang}
        assert len(chapters) >= 12, (lang, sorted(chapters))

"""Dense and hybrid search and kb_ask with real embeddings and chat from the llama.cpp engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kb_helpers import faq_section, in_section

from localmcp.servers.kb.ask import citations
from localmcp.servers.kb.service import KnowledgeBase
from localmcp.shared.config import Settings
from localmcp.shared.errors import ConfigError

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _sections(result: object) -> list[tuple[str, list[str]]]:
    return [(h.source, h.heading_path) for h in result.hits]  # type: ignore[attr-defined]


async def test_collection_records_the_engine_model_and_its_dimension(
    dense_kb: KnowledgeBase,
) -> None:
    listing = await dense_kb.list_collections()
    (sections,) = [c for c in listing.collections if c.name == "sections"]
    assert sections.embed_model == dense_kb.embedder.model  # type: ignore[union-attr]
    assert sections.dim == 576  # SmolLM2-135M hidden size, mean-pooled
    assert sections.documents == 14
    assert not listing.keyword_only


@pytest.mark.parametrize(
    ("query", "number"),
    [
        ("How can I keep my Debian system current?", "9.1"),
        ("Can I compile my own kernel?", "10.1"),
        ("如何使 Debian 系统保持最新", "9.1"),
        ("编译内核", "10.1"),
    ],
)
async def test_dense_search_finds_the_section_by_meaning(
    dense_kb: KnowledgeBase, query: str, number: str
) -> None:
    result = await dense_kb.search(query, collections=["sections"], top_k=3, mode="dense")
    assert result.mode == "dense"
    assert any(in_section(path, number) for _, path in _sections(result)), _sections(result)
    assert all(-1.0 <= h.score <= 1.0 for h in result.hits)  # cosine similarity


@pytest.mark.parametrize(
    ("query", "number"),
    [
        ("dpkg package management program", "8.1.1"),
        ("如何使 Debian 系统保持最新", "9.1"),
        ("什么是 Debian 软件包", "7.1"),
    ],
)
async def test_hybrid_search_finds_the_section_in_english_and_chinese(
    dense_kb: KnowledgeBase, query: str, number: str
) -> None:
    result = await dense_kb.search(query, collections=["sections"], top_k=3, mode="hybrid")
    assert result.mode == "hybrid"
    assert any(in_section(path, number) for _, path in _sections(result)), _sections(result)


async def test_default_mode_is_hybrid_when_an_embedding_model_is_configured(
    dense_kb: KnowledgeBase,
) -> None:
    result = await dense_kb.search("APT", collections=["sections"])
    assert result.mode == "hybrid" and result.warnings == []


async def test_weighted_fusion_is_used_when_configured(dense_kb: KnowledgeBase) -> None:
    rrf = await dense_kb.search("dpkg", collections=["sections"], top_k=3, mode="hybrid")
    dense_kb.settings.kb.fusion = "weighted"
    try:
        result = await dense_kb.search("dpkg", collections=["sections"], top_k=3, mode="hybrid")
    finally:
        dense_kb.settings.kb.fusion = "rrf"
    assert in_section(result.hits[0].heading_path, "8.1.1")
    # RRF gives at most 1/(k+1) per list, two lists here; weighted scores are normalised
    # similarities, far above that for a passage about the very word asked for.
    rrf_ceiling = 2 / (dense_kb.settings.kb.rrf_k + 1)
    assert 0.0 < rrf.hits[0].score <= rrf_ceiling
    assert rrf_ceiling < result.hits[0].score <= 1.0


async def test_changing_the_embedding_model_of_a_collection_is_refused(
    tmp_path: Path, engine_settings: Callable[..., Settings], open_kb: Callable[..., KnowledgeBase]
) -> None:
    first = open_kb(engine_settings(tmp_path))
    await first.ingest_text("# Note\n\nAPT installs packages.", source="note", collection="c")
    first.close()
    other = open_kb(engine_settings(tmp_path, embed_model="another-embedder"))
    other.embedder.dim = 576  # type: ignore[union-attr]  # as if that model also had 576 dims

    with pytest.raises(ConfigError) as err:
        await other.ingest_text("# Two\n\nmore text", source="two", collection="c")
    message = str(err.value)
    assert "'another-embedder'" in message and "SmolLM2" in message
    assert "localmcp kb drop c --yes" in message  # how to re-embed
    with pytest.raises(ConfigError, match="dense search is not possible"):
        await other.search("APT", collections=["c"], mode="dense")
    fallback = await other.search("APT", collections=["c"], mode="hybrid")
    assert fallback.mode == "keyword" and fallback.hits and fallback.warnings


async def test_ask_answers_from_numbered_sources(dense_kb: KnowledgeBase) -> None:
    result = await dense_kb.ask("What is dpkg?", collections=["sections"], top_k=3)
    assert result.found
    assert result.answer.strip()
    assert result.model == dense_kb.settings.backend.model
    assert [s.n for s in result.sources] == list(range(1, len(result.sources) + 1))
    assert any(in_section(s.heading_path, "8.1.1") for s in result.sources)
    assert set(result.cited) <= {s.n for s in result.sources}
    assert all(s.uri == f"kb://sections/{s.doc_id}" for s in result.sources)


async def test_ask_spans_several_collections(
    tmp_path: Path, engine_settings: Callable[..., Settings], open_kb: Callable[..., KnowledgeBase]
) -> None:
    kb = open_kb(engine_settings(tmp_path))
    await kb.ingest_text(faq_section("pkgtools", "en", "8.1.1"), source="dpkg", collection="tools")
    await kb.ingest_text(faq_section("pkg-basics", "en", "7.1"), source="pkg", collection="basics")

    result = await kb.ask(
        "What is dpkg, and what is a Debian package?", collections=["tools", "basics"], top_k=4
    )
    assert result.found and result.answer.strip()
    assert {s.uri.split("/")[2] for s in result.sources} == {"tools", "basics"}
    assert [s.n for s in result.sources] == list(range(1, len(result.sources) + 1))


async def test_ask_says_plainly_when_nothing_relevant_is_stored(dense_kb: KnowledgeBase) -> None:
    result = await dense_kb.ask("zqxv wplk frobnicate", collections=["sections"])
    assert not result.found
    assert "Nothing relevant" in result.answer
    assert result.sources == [] and result.model is None


def test_citations_are_read_from_the_answer_and_bounded_by_the_sources() -> None:
    answer = "APT resolves dependencies [2]. dpkg installs files [1, 3]; see also [9] and [2]."
    assert citations(answer, 3) == [2, 1, 3]

"""Keyword search over the real Debian FAQ in English and Chinese, filters, several collections."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fixtures.openai_fixture import FakeOpenAI, fake_openai, openai_server
from kb_helpers import in_section, write

from localmcp.servers.kb.search import Filters
from localmcp.servers.kb.service import KnowledgeBase
from localmcp.shared.config import Settings
from localmcp.shared.errors import BadInput, ConfigError, NotFound

OpenKB = Callable[[Settings], KnowledgeBase]

__all__ = ["fake_openai", "openai_server"]  # fixtures, used by name


def _where(result: object) -> list[tuple[str, str]]:
    return [(Path(h.source).name, h.heading_path[-1]) for h in result.hits]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("query", "page", "number"),
    [
        ("How do I put a package on hold?", "pkg-basics.en.html", "7.12"),
        ("find out what package produced a particular file", "pkgtools.en.html", "8.5"),
        ("set up my own apt-able repository", "ftparchives.en.html", "6.12"),
        ("how to report a bug in Debian", "support.en.html", "12.5"),
        ("What is a Debian conffile?", "pkg-basics.en.html", "7.5"),
    ],
)
async def test_english_question_retrieves_its_faq_section(
    faq_kb: KnowledgeBase, query: str, page: str, number: str
) -> None:
    result = await faq_kb.search(query, collections=["faq_en"], top_k=3)
    assert result.mode == "keyword"  # no embedding model: the result says so
    assert any(
        Path(h.source).name == page and in_section(h.heading_path, number) for h in result.hits
    ), _where(result)


@pytest.mark.parametrize(
    ("query", "page", "number"),
    [
        ("如何将软件包设置为保留", "pkg-basics.zh-cn.html", "7.12"),
        ("怎么知道系统中安装了哪些软件包", "pkgtools.zh-cn.html", "8.3"),
        ("如何报告 Debian 中的错误", "support.zh-cn.html", "12.5"),
        ("Debian 一词如何发音", "basic-defs.zh-cn.html", "1.7"),
        ("什么是虚拟软件包", "pkg-basics.zh-cn.html", "7.8"),
    ],
)
async def test_chinese_question_retrieves_its_faq_section(
    faq_kb: KnowledgeBase, query: str, page: str, number: str
) -> None:
    result = await faq_kb.search(query, collections=["faq_zh"], top_k=3)
    assert any(
        Path(h.source).name == page and in_section(h.heading_path, number) for h in result.hits
    ), _where(result)


async def test_english_term_inside_chinese_text_is_found_in_any_case(
    faq_kb: KnowledgeBase,
) -> None:
    """The mixed analyzer lower-cases: 'apt' finds the Chinese section headed 'APT'."""
    result = await faq_kb.search("apt 高级包管理工具", collections=["faq_zh"], top_k=3)
    assert any(in_section(h.heading_path, "8.1.2") for h in result.hits), _where(result)


async def test_hit_carries_text_score_source_headings_position_and_resource_uri(
    faq_kb: KnowledgeBase,
) -> None:
    result = await faq_kb.search("dpkg-deb", collections=["faq_en"], top_k=5)
    hit = result.hits[0]
    assert hit.rank == 1 and hit.score > 0
    assert "dpkg-deb" in hit.text
    assert hit.heading_path[0].startswith("Chapter 8")
    assert hit.position >= 0 and hit.collection == "faq_en"
    assert hit.uri == f"kb://faq_en/{hit.doc_id}"
    assert [h.rank for h in result.hits] == list(range(1, len(result.hits) + 1))
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)


async def test_search_spans_several_collections(faq_kb: KnowledgeBase) -> None:
    result = await faq_kb.search("dpkg", collections=["faq_en", "faq_zh"], top_k=10)
    assert result.collections == ["faq_en", "faq_zh"]
    assert {h.collection for h in result.hits} == {"faq_en", "faq_zh"}
    everything = await faq_kb.search("dpkg", collections=["*"], top_k=10)
    assert set(everything.collections) == {"faq_en", "faq_zh"}


async def test_source_filter_exact_and_by_prefix(faq_kb: KnowledgeBase, faq_en_dir: Path) -> None:
    page = str(faq_en_dir / "pkgtools.en.html")
    exact = await faq_kb.search("package", collections=["faq_en"], filters=Filters(source=page))
    assert exact.hits and {h.source for h in exact.hits} == {page}
    prefix = await faq_kb.search(
        "package",
        collections=["faq_en", "faq_zh"],
        top_k=20,
        filters=Filters(source=str(faq_en_dir) + "/pkg*"),
    )
    assert {Path(h.source).name for h in prefix.hits} <= {"pkgtools.en.html", "pkg-basics.en.html"}
    assert len({h.source for h in prefix.hits}) == 2


async def test_doc_id_filter_keeps_to_one_document(faq_kb: KnowledgeBase) -> None:
    first = (await faq_kb.search("kernel", collections=["faq_en"])).hits[0]
    only = await faq_kb.search(
        "package", collections=["faq_en"], top_k=20, filters=Filters(doc_id=first.doc_id)
    )
    assert only.hits and {h.doc_id for h in only.hits} == {first.doc_id}


async def test_tag_and_date_filters(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    old = write(tmp_path / "old" / "old.md", "# Old\n\nbackup notes")
    write(tmp_path / "new" / "new.md", "# New\n\nbackup plans")
    stamp = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    os.utime(old, (stamp, stamp))
    kb = open_kb(make_settings())
    await kb.ingest_paths([tmp_path / "old"], tags=["ops"], collection="n")
    await kb.ingest_paths([tmp_path / "new"], tags=["plans"], collection="n")

    async def names(**filters: object) -> list[str]:
        result = await kb.search("backup", collections=["n"], filters=Filters(**filters))  # type: ignore[arg-type]
        return sorted(Path(h.source).name for h in result.hits)

    assert await names() == ["new.md", "old.md"]
    assert await names(tags=("ops",)) == ["old.md"]
    assert await names(tags=("ops", "plans")) == ["new.md", "old.md"]
    assert await names(tags=("none",)) == []
    assert await names(modified_after=datetime(2021, 1, 1)) == ["new.md"]
    assert await names(modified_before=datetime(2021, 1, 1, tzinfo=UTC)) == ["old.md"]


async def test_keyword_mode_without_embeddings_works_and_hybrid_falls_back_with_a_note(
    faq_kb: KnowledgeBase,
) -> None:
    assert faq_kb.keyword_only
    result = await faq_kb.search("dpkg", collections=["faq_en"], mode="hybrid")
    assert result.mode == "keyword" and result.hits
    assert "only keyword search works" in result.warnings[0]
    with pytest.raises(ConfigError, match="dense search is not possible"):
        await faq_kb.search("dpkg", collections=["faq_en"], mode="dense")


async def test_nothing_matching_gives_no_hits(faq_kb: KnowledgeBase) -> None:
    result = await faq_kb.search("zqxvwplk", collections=["faq_en"])
    assert result.hits == []


@pytest.mark.parametrize("query", ["", "   \n\t"])
async def test_empty_query_is_refused(faq_kb: KnowledgeBase, query: str) -> None:
    with pytest.raises(BadInput, match="the query is empty"):
        await faq_kb.search(query, collections=["faq_en"])


async def test_100000_character_query_is_refused_naming_the_limit(faq_kb: KnowledgeBase) -> None:
    with pytest.raises(BadInput) as err:
        await faq_kb.search("软件包" * 33_333 + "d", collections=["faq_en"])
    assert "100,000 characters, over the kb.max_query_chars limit of 4,000" in str(err.value)


async def test_unknown_and_invalid_collections_are_refused(faq_kb: KnowledgeBase) -> None:
    with pytest.raises(NotFound, match="faq_en, faq_zh"):
        await faq_kb.search("dpkg", collections=["nope"])
    with pytest.raises(BadInput, match="letters, digits"):
        await faq_kb.search("dpkg", collections=["常见 问题"])


async def test_top_k_out_of_range_is_refused(faq_kb: KnowledgeBase) -> None:
    with pytest.raises(BadInput, match="top_k 0"):
        await faq_kb.search("dpkg", collections=["faq_en"], top_k=0)


async def test_resource_text_is_the_document_rebuilt_without_overlaps(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    from localmcp.shared.documents import load_document

    sentences = " ".join(f"Sentence number {i} talks about packages." for i in range(300))
    path = write(tmp_path / "long.md", f"# Long\n\n{sentences}\n\n## Second\n\nMore text here.")
    kb = open_kb(make_settings(chunk_size=400, chunk_overlap=80))
    result = await kb.ingest_paths([path], collection="docs")
    assert result.documents[0].chunks > 5
    record, text = await kb.read_document("docs", result.documents[0].doc_id or "")
    assert record.source == str(path)
    assert text == load_document(path, max_bytes=10**6).text


async def _rerank_kb(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB, url: str, **kb: object
) -> KnowledgeBase:
    """Keyword-only documents where BM25 prefers a page that names only one query word."""
    docs = tmp_path / "docs"
    write(docs / "stripes.md", "# Stripes\n\nzebra zebra zebra zebra")
    write(
        docs / "both.md",
        "# Both\n\nan apple fell near the zebra while the keeper walked along the fence "
        "past the pond and the birds and the long row of trees in the afternoon",
    )
    for name in ("pie", "juice", "tree"):
        write(docs / f"{name}.md", f"# {name}\n\napple {name}")
    backend = {"kind": "openai", "base_url": url, "model": "org/scripted-7b"}
    knowledge = open_kb(make_settings(backend=backend, **kb))
    assert (await knowledge.ingest_paths([docs], collection="docs")).added == 5
    return knowledge


async def test_reranking_reorders_the_candidates_by_the_engines_scores(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    open_kb: OpenKB,
    fake_openai: FakeOpenAI,
) -> None:
    kb = await _rerank_kb(tmp_path, make_settings, open_kb, fake_openai.base_url)
    before = await kb.search("apple zebra", collections=["docs"], top_k=1)
    assert not before.reranked
    assert [Path(h.source).name for h in before.hits] == ["stripes.md"]  # BM25's choice

    kb.settings.kb.rerank_model = "rerank-small"
    kb.settings.kb.rerank_candidates = 10
    after = await kb.search("apple zebra", collections=["docs"], top_k=2)
    assert after.reranked and not after.warnings
    # The scripted reranker scores the share of query words a passage contains.
    assert [(Path(h.source).name, h.score) for h in after.hits] == [
        ("both.md", 1.0),
        ("stripes.md", 0.5),
    ]


async def test_an_engine_without_rerank_leaves_the_order_and_says_so(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    open_kb: OpenKB,
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.rerank = False
    kb = await _rerank_kb(
        tmp_path, make_settings, open_kb, fake_openai.base_url, rerank_model="rerank-small"
    )
    result = await kb.search("apple zebra", collections=["docs"], top_k=1)
    assert not result.reranked
    assert [Path(h.source).name for h in result.hits] == ["stripes.md"]
    assert "reranking skipped" in result.warnings[0] and "no rerank endpoint" in result.warnings[0]

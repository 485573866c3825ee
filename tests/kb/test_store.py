"""The Milvus store on real Milvus Lite files: names, the generation switch, recovery, filters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localmcp.servers.kb.store import (
    DocRecord,
    Store,
    check_collection_name,
    lite_path_for,
    prefix_filter,
)
from localmcp.shared.config import KBSettings
from localmcp.shared.errors import BadInput, ConfigError, NotFound


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(KBSettings(), tmp_path)
    yield s
    s.close()


def _rows(
    doc_id: str, gen: str, texts: list[str], source: str = "/docs/a.md"
) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{doc_id}.{gen}.{i}",
            "doc_id": doc_id,
            "gen": gen,
            "source": source,
            "title": "A",
            "heading_path": ["A"],
            "position": i,
            "start": 0,
            "text": text,
            "search_text": text,
            "content_hash": "h",
            "modified_at": 1000.0,
            "tags": ["t"],
            "metadata": {},
        }
        for i, text in enumerate(texts)
    ]


def _record(doc_id: str, gen: str, chunks: int, source: str = "/docs/a.md") -> DocRecord:
    return DocRecord(
        doc_id=doc_id,
        source=source,
        title="A",
        format="markdown",
        content_hash=f"hash-{gen}",
        gen=gen,
        chunk_count=chunks,
        char_count=10,
        modified_at=1000.0,
        ingested_at=1000.0,
    )


def _keyword(store: Store, name: str, query: str, expr: str = "") -> list[str]:
    hits = store.search(name, mode="keyword", query=query, vector=None, limit=10, expr=expr)
    return [h.text for h in hits]


@pytest.mark.parametrize(
    "name", ["my docs", "知识库", "docs-2024", "1docs", "a__b", "", "x" * 64, "Notes", "faqEN"]
)
def test_collection_names_milvus_cannot_hold_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(BadInput) as err:
        check_collection_name(name)
    assert repr(name) in str(err.value)
    assert "letters, digits" in str(err.value)


def test_valid_collection_name_passes() -> None:
    assert check_collection_name("debian_faq_2") == "debian_faq_2"


def test_lite_file_name_milvus_lite_cannot_open_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="36 characters"):
        lite_path_for(KBSettings(db_path=tmp_path / "my knowledge base.db"), tmp_path)


def test_search_in_a_new_empty_collection_finds_nothing(store: Store) -> None:
    store.create_collection("empty", embed_model=None, dim=None)
    assert _keyword(store, "empty", "anything") == []


def test_unknown_collection_names_the_known_ones(store: Store) -> None:
    store.create_collection("known", embed_model=None, dim=None)
    with pytest.raises(NotFound, match="known: known"):
        store.meta("missing")


def test_collection_records_model_and_dimension_and_survives_reopen(tmp_path: Path) -> None:
    first = Store.open(KBSettings(), tmp_path)
    first.create_collection("dense", embed_model="m1", dim=8)
    first.close()
    again = Store.open(KBSettings(), tmp_path)
    try:
        meta = again.meta("dense")
        assert meta is not None
        assert (meta.embed_model, meta.dim) == ("m1", 8)
        assert [m.name for m in again.list_collections()] == ["dense"]
    finally:
        again.close()


def test_chunks_are_invisible_until_their_generation_is_committed(store: Store) -> None:
    store.create_collection("c", embed_model=None, dim=None)
    store.begin_doc("c", "d1", "g1", "/docs/a.md")
    store.insert_chunks("c", _rows("d1", "g1", ["apt installs packages", "dpkg is lower level"]))
    assert _keyword(store, "c", "apt") == []

    store.commit_doc("c", _record("d1", "g1", 2))
    assert _keyword(store, "c", "apt") == ["apt installs packages"]
    assert store.pending("c") == []


def test_new_generation_replaces_the_old_one_at_commit(store: Store) -> None:
    store.create_collection("c", embed_model=None, dim=None)
    store.insert_chunks("c", _rows("d1", "g1", ["old apt text"]))
    store.commit_doc("c", _record("d1", "g1", 1))

    store.begin_doc("c", "d1", "g2", "/docs/a.md")
    store.insert_chunks("c", _rows("d1", "g2", ["new apt text", "more apt text"]))
    assert _keyword(store, "c", "apt") == ["old apt text"]  # until the switch

    store.commit_doc("c", _record("d1", "g2", 2))
    assert sorted(_keyword(store, "c", "apt")) == ["more apt text", "new apt text"]
    assert store.count_chunks("c") == 2  # the old generation's rows are gone


def test_recover_drops_an_unfinished_write_and_keeps_the_visible_version(store: Store) -> None:
    store.create_collection("c", embed_model=None, dim=None)
    store.insert_chunks("c", _rows("d1", "g1", ["kept apt text"]))
    store.commit_doc("c", _record("d1", "g1", 1))
    # A writer died after inserting a new generation, and another after a first write.
    store.begin_doc("c", "d1", "g2", "/docs/a.md")
    store.insert_chunks("c", _rows("d1", "g2", ["half apt text"]))
    store.begin_doc("c", "d2", "g9", "/docs/b.md")
    store.insert_chunks("c", _rows("d2", "g9", ["orphan apt text"], source="/docs/b.md"))
    assert store.count_chunks("c") == 3

    assert store.recover("c") == 2
    assert store.count_chunks("c") == 1
    assert _keyword(store, "c", "apt") == ["kept apt text"]
    assert store.pending("c") == []


def test_delete_doc_hides_it_and_removes_its_chunks(store: Store) -> None:
    store.create_collection("c", embed_model=None, dim=None)
    store.insert_chunks("c", _rows("d1", "g1", ["apt one", "apt two"]))
    store.commit_doc("c", _record("d1", "g1", 2))
    assert store.delete_doc("c", "d1") == 2
    assert _keyword(store, "c", "apt") == []
    assert store.count_chunks("c") == 0


def test_a_second_store_on_a_milvus_server_sees_commits_of_the_first(
    store: Store, tmp_path: Path
) -> None:
    """The visibility cache re-reads the manifest for generations it has not seen."""
    store.create_collection("c", embed_model=None, dim=None)
    store.insert_chunks("c", _rows("d1", "g1", ["apt first"]))
    store.commit_doc("c", _record("d1", "g1", 1))
    assert _keyword(store, "c", "apt") == ["apt first"]  # cache now knows g1
    # Another writer (simulated by bypassing this store's cache) replaces the document.
    store.client.insert("c", _rows("d1", "g2", ["apt second"]))
    store.client.upsert(
        "c__docs",
        [
            {
                "key": "d:d1",
                "kind": "doc",
                "doc_id": "d1",
                "gen": "g2",
                "source": "/docs/a.md",
                "title": "A",
                "format": "markdown",
                "content_hash": "x",
                "chunk_count": 1,
                "char_count": 1,
                "modified_at": 0.0,
                "ingested_at": 0.0,
                "tags": [],
                "metadata": {},
                "chunking": "",
                "embed_model": "",
                "placeholder": [0.0, 0.0],
            }
        ],
    )
    assert _keyword(store, "c", "apt") == ["apt second"]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("/a/b_c/", ["/a/b_c/1.md"]), ("/a/b%c/", ["/a/b%c/2.md"]), ("/a/", None)],
)
def test_source_prefix_filter_treats_underscore_and_percent_literally(
    store: Store, prefix: str, expected: list[str] | None
) -> None:
    store.create_collection("c", embed_model=None, dim=None)
    sources = ["/a/b_c/1.md", "/a/b%c/2.md", "/a/bxc/3.md"]
    for i, source in enumerate(sources):
        store.insert_chunks("c", _rows(f"d{i}", "g", ["apt text"], source=source))
        store.commit_doc("c", _record(f"d{i}", "g", 1, source=source))
    hits = store.search(
        "c",
        mode="keyword",
        query="apt",
        vector=None,
        limit=10,
        expr=prefix_filter("source", prefix),
    )
    assert sorted(h.source for h in hits) == (expected or sorted(sources))


def test_closed_store_refuses_calls_clearly(tmp_path: Path) -> None:
    s = Store.open(KBSettings(), tmp_path)
    s.close()
    with pytest.raises(Exception, match="store is closed"):
        s.list_collections()


def test_two_files_can_be_open_in_one_process(tmp_path: Path, store: Store) -> None:
    other = Store.open(KBSettings(db_path=tmp_path / "other.db"), tmp_path)
    try:
        other.create_collection("x", embed_model=None, dim=None)
        assert [m.name for m in other.list_collections()] == ["x"]
        assert store.list_collections() == []
    finally:
        other.close()

"""Ingestion into real Milvus Lite files: folders, incremental sync, dedup, bad input."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from kb_helpers import write

from localmcp.servers.kb.ingest import doc_id_for
from localmcp.servers.kb.service import KnowledgeBase
from localmcp.shared.config import Settings
from localmcp.shared.errors import BadInput

OpenKB = Callable[[Settings], KnowledgeBase]


def _scanned_pdf() -> bytes:
    """A one-page PDF holding only a picture of text (no text layer)."""
    from PIL import Image, ImageDraw
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    image = Image.new("RGB", (600, 300), "white")
    ImageDraw.Draw(image).text((20, 20), "Only pixels here.", fill="black")
    pdf.drawImage(ImageReader(image), 72, 400, 450, 225)
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


async def _sources(kb: KnowledgeBase, collection: str = "docs") -> set[str]:
    return {d.source for d in kb.store.iter_docs(collection)}


async def _hit_sources(kb: KnowledgeBase, query: str, collection: str = "docs") -> list[str]:
    result = await kb.search(query, collections=[collection], top_k=10, mode="keyword")
    return [h.source for h in result.hits]


async def test_folder_ingest_takes_included_files_recursively_and_skips_excluded(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "# Alpha\n\nAPT installs packages.")
    write(docs / "sub" / "deeper" / "b.txt", "Beta text about dpkg.")
    write(
        docs / "c.html",
        "<html><head><title>Gamma</title></head><body><h1>Gamma</h1>"
        "<p>HTML page about aptitude.</p></body></html>",
    )
    write(docs / "script.py", "print('not a document')")
    write(docs / ".git" / "notes.md", "# Not this\n\ninside .git")
    write(docs / "node_modules" / "x" / "readme.md", "# Nor this")
    kb = open_kb(make_settings())

    result = await kb.ingest_paths([docs], collection="docs")

    assert (result.added, result.failed, result.unchanged) == (3, 0, 0)
    assert await _sources(kb) == {
        str(docs / "a.md"),
        str(docs / "sub" / "deeper" / "b.txt"),
        str(docs / "c.html"),
    }
    assert result.chunks_written >= 3
    assert result.embed_model is None  # keyword only: no model configured
    assert await _hit_sources(kb, "aptitude") == [str(docs / "c.html")]


async def test_reingest_skips_unchanged_replaces_changed_and_removes_deleted(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    docs = tmp_path / "docs"
    keep = write(docs / "keep.md", "# Keep\n\nunchanged words about penguins.")
    change = write(docs / "change.md", "# Change\n\nold words about walruses.")
    gone = write(docs / "gone.md", "# Gone\n\nwords about narwhals.")
    kb = open_kb(make_settings())
    first = await kb.ingest_paths([docs], collection="docs")
    assert first.added == 3

    change.write_text("# Change\n\nnew words about dolphins.", encoding="utf-8")
    gone.unlink()
    second = await kb.ingest_paths([docs], collection="docs")

    status = {Path(d.source).name: d.status for d in second.documents}
    assert status == {"keep.md": "unchanged", "change.md": "updated", "gone.md": "removed"}
    assert (second.unchanged, second.updated, second.removed) == (1, 1, 1)
    assert await _hit_sources(kb, "walruses") == []
    assert await _hit_sources(kb, "dolphins") == [str(change)]
    assert await _hit_sources(kb, "narwhals") == []
    assert await _hit_sources(kb, "penguins") == [str(keep)]
    stats = (await kb.stats("docs")).collections[0]
    assert (stats.documents, stats.hidden_chunks) == (2, 0)


async def test_same_file_through_two_path_spellings_is_one_document(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    real = write(tmp_path / "docs" / "guide.md", "# Guide\n\nthe one and only guide.")
    (tmp_path / "docs" / "alias.md").symlink_to(real)
    kb = open_kb(make_settings())

    result = await kb.ingest_paths(
        [real, tmp_path / "docs" / "alias.md", f"{tmp_path}/docs/./sub/../guide.md"],
        collection="docs",
    )
    again = await kb.ingest_paths([tmp_path / "docs"], collection="docs")

    assert result.added == 1 and len(result.documents) == 1
    assert result.documents[0].doc_id == doc_id_for(str(real))
    assert (again.added, again.unchanged) == (0, 1)
    assert await _sources(kb) == {str(real)}


async def test_identical_text_under_two_names_is_stored_once(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    text = "# License\n\nPermission is granted to copy this file."
    write(tmp_path / "docs" / "a" / "LICENSE.md", text)
    write(tmp_path / "docs" / "b" / "LICENSE.md", text)
    kb = open_kb(make_settings())

    result = await kb.ingest_paths([tmp_path / "docs"], collection="docs")

    assert (result.added, result.duplicates) == (1, 1)
    duplicate = next(d for d in result.documents if d.status == "duplicate")
    assert "same text as" in (duplicate.message or "")
    assert len(await _hit_sources(kb, "permission granted")) == 1


async def test_each_bad_file_is_reported_with_its_reason_and_the_batch_goes_on(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    docs = tmp_path / "docs"
    good = write(docs / "good.md", "# Good\n\nthis one is fine.")
    write(docs / "empty.md", "")
    write(docs / "binary.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(300))
    write(docs / "latin.txt", bytes(range(128, 256)) * 8)  # no encoding explains it
    write(docs / "scan.pdf", _scanned_pdf())
    huge = docs / "huge.md"
    with huge.open("wb") as handle:  # 200 MB, sparse: nothing is written to disk
        handle.truncate(200 * 1024 * 1024)
    kb = open_kb(make_settings(max_file_mb=50))

    result = await kb.ingest_paths([docs], collection="docs")

    reasons = {Path(d.source).name: d.message or "" for d in result.documents}
    assert result.added == 1 and result.failed == 5
    assert "empty file" in reasons["empty.md"]
    assert "looks binary" in reasons["binary.md"]
    assert "cannot tell its text encoding" in reasons["latin.txt"]
    assert "no extractable text" in reasons["scan.pdf"]
    assert "200.0 MiB, over the 50 MiB limit" in reasons["huge.md"]
    assert "kb.max_file_mb" in reasons["huge.md"]
    assert await _sources(kb) == {str(good)}
    assert (await kb.stats("docs")).collections[0].hidden_chunks == 0


async def test_a_batch_of_only_bad_files_creates_no_knowledge_base(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    docs = tmp_path / "docs"
    write(docs / "empty.md", "")
    write(docs / "binary.md", b"\x00\x01\x02PK" + bytes(300))
    outside = write(tmp_path.parent / f"{tmp_path.name}-outside.md", "# Elsewhere\n\ntext")
    kb = open_kb(make_settings())

    result = await kb.ingest_paths([docs, outside], collection="fresh")

    assert (result.added, result.failed) == (0, 3)
    assert result.embed_model is None
    assert [c.name for c in (await kb.list_collections()).collections] == []


async def test_paths_outside_the_roots_are_refused_and_nothing_is_stored(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    root = tmp_path / "root"
    outside = write(tmp_path / "outside" / "secret.md", "# Secret\n\ndo not read")
    write(root / "ok.md", "# OK\n\nfine")
    (root / "escape.md").symlink_to(outside)
    kb = open_kb(make_settings(allowed_roots=[root]))

    result = await kb.ingest_paths(
        [outside, root / ".." / "outside" / "secret.md", root / "escape.md", root],
        collection="docs",
    )

    failures = [d for d in result.documents if d.status == "failed"]
    assert len(failures) == 4  # three named paths, and the symlink again inside the folder
    assert all("outside the allowed roots" in (d.message or "") for d in failures)
    assert await _sources(kb) == {str(root / "ok.md")}
    assert await _hit_sources(kb, "secret") == []


async def test_no_allowed_roots_means_no_file_is_read(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    write(tmp_path / "a.md", "# A\n\ntext")
    kb = open_kb(make_settings(allowed_roots=[]))
    result = await kb.ingest_paths([tmp_path / "a.md"], collection="docs")
    assert result.failed == 1
    assert "no allowed roots are configured" in (result.documents[0].message or "")


@pytest.mark.parametrize("name", ["my docs", "知识库"])
async def test_collection_name_with_spaces_or_cjk_is_refused_before_anything_is_written(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB, name: str
) -> None:
    write(tmp_path / "a.md", "# A\n\ntext")
    kb = open_kb(make_settings())
    with pytest.raises(BadInput, match="letters, digits"):
        await kb.ingest_paths([tmp_path / "a.md"], collection=name)
    assert kb.store.list_collections() == []


async def test_raw_text_with_tags_and_metadata_is_replaced_by_the_same_source(
    make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    kb = open_kb(make_settings())
    first = await kb.ingest_text(
        "# Meeting\n\nWe chose Milvus for vectors.",
        source="notes/meeting",
        tags=["meeting", "2024"],
        metadata={"author": "张三"},
        collection="notes",
    )
    second = await kb.ingest_text(
        "# Meeting\n\nWe chose Milvus Lite, embedded.",
        source="notes/meeting",
        tags=["meeting"],
        collection="notes",
    )
    third = await kb.ingest_text(
        "# Meeting\n\nWe chose Milvus Lite, embedded.",
        source="notes/meeting",
        tags=["meeting"],
        collection="notes",
    )

    assert (first.added, second.updated, third.unchanged) == (1, 1, 1)
    records = list(kb.store.iter_docs("notes"))
    assert len(records) == 1
    assert records[0].tags == ["meeting"]
    result = await kb.search("embedded", collections=["notes"], mode="keyword")
    assert [h.source for h in result.hits] == ["notes/meeting"]
    assert result.hits[0].tags == ["meeting"]


async def test_raw_text_that_is_empty_is_refused(
    make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    kb = open_kb(make_settings())
    with pytest.raises(BadInput, match="empty text"):
        await kb.ingest_text("  \n\t ", source="blank", collection="notes")
    assert kb.store.list_collections() == []


async def test_ingest_reports_progress_for_every_file(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    for i in range(4):
        write(tmp_path / "docs" / f"{i}.md", f"# Doc {i}\n\ncontent number {i}")
    seen: list[tuple[float, float | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen.append((done, total))

    kb = open_kb(make_settings())
    await kb.ingest_paths([tmp_path / "docs"], collection="docs", progress=progress)
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


async def test_long_chinese_paragraph_is_split_into_bounded_chunks(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    sentence = "知识库把文档切成有界的片段以便检索。"
    write(tmp_path / "zh.txt", sentence * 1200)  # ~21,600 characters, no newline
    kb = open_kb(make_settings(chunk_size=800, chunk_overlap=80))
    result = await kb.ingest_paths([tmp_path / "zh.txt"], collection="docs")
    assert result.added == 1
    assert result.chunks_written >= 21_600 // 800
    hits = (await kb.search("检索", collections=["docs"], top_k=100, mode="keyword")).hits
    assert hits and max(len(h.text) for h in hits) <= 800


async def test_changing_the_chunk_size_rechunks_unchanged_files(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    write(tmp_path / "docs" / "a.md", "# A\n\n" + "words and more words. " * 200)
    kb = open_kb(make_settings(chunk_size=1200))
    first = await kb.ingest_paths([tmp_path / "docs"], collection="docs")
    kb.settings.kb.chunk_size = 300
    second = await kb.ingest_paths([tmp_path / "docs"], collection="docs")
    assert second.updated == 1
    assert second.chunks_written > first.chunks_written


async def test_real_debian_pdf_is_ingested_and_searchable(
    faq_pdf: Path, tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    kb = open_kb(make_settings(allowed_roots=[faq_pdf.parent]))
    result = await kb.ingest_paths([faq_pdf], collection="pdf")
    assert result.added == 1, result.documents
    assert result.documents[0].chunks > 50
    hits = (await kb.search("dpkg-deb", collections=["pdf"], mode="keyword")).hits
    assert hits and all(h.source == str(faq_pdf) for h in hits)


async def test_time_limit_stops_between_documents_and_a_rerun_continues(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    open_kb: OpenKB,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    docs = tmp_path / "docs"
    write(docs / "first.md", "# First\n\nwords about puffins.")
    # Long enough for several insert batches at this chunk size.
    big = write(docs / "second.md", "# Second\n\n" + "Gannets dive for fish. " * 1500)
    write(docs / "third.md", "# Third\n\nwords about cormorants.")
    settings = make_settings(chunk_size=100, chunk_overlap=0, ingest_timeout=2.0)
    kb = open_kb(settings)
    await kb.ingest_text("# Warm-up\n\ncreates the collection", collection="docs")

    insert = kb.store.insert_chunks

    def slow_insert(collection: str, rows: list[dict[str, object]]) -> None:
        if rows and rows[0]["source"] == str(big):
            time.sleep(1.5)  # the deadline passes while this document is half written
        insert(collection, rows)

    monkeypatch.setattr(kb.store, "insert_chunks", slow_insert)
    files = [docs / "first.md", big, docs / "third.md"]
    cut = await kb.ingest_paths(files, collection="docs")

    assert (cut.added, cut.failed, cut.not_reached) == (1, 0, 2)
    assert "kb.ingest_timeout" in cut.warnings[-1] and str(big) in cut.warnings[-1]
    assert str(big) not in await _sources(kb)
    assert await _hit_sources(kb, "gannets") == []
    stats = await kb.stats("docs")
    assert stats.collections[0].hidden_chunks == 0  # the half-written rows were removed

    monkeypatch.setattr(kb.store, "insert_chunks", insert)
    kb.settings.kb.ingest_timeout = 3600.0
    rerun = await kb.ingest_paths(files, collection="docs")

    assert (rerun.unchanged, rerun.added, rerun.not_reached) == (1, 2, 0)
    assert str(big) in await _sources(kb)
    assert str(big) in await _hit_sources(kb, "gannets")


async def test_pipes_and_devices_are_refused_without_reading_them(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    import os
    import socket

    import anyio

    docs = tmp_path / "docs"
    write(docs / "fine.md", "# Fine\n\nordinary file")
    os.mkfifo(docs / "pipe.md")  # opening it for reading would wait for a writer for ever
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(docs / "socket.md"))
    kb = open_kb(make_settings())

    try:
        with anyio.fail_after(30):
            result = await kb.ingest_paths([docs, docs / "pipe.md"], collection="docs")
    finally:
        listener.close()

    reasons = {Path(d.source).name: d.message or "" for d in result.documents}
    assert (result.added, result.failed) == (1, 2)
    assert "is not a regular file" in reasons["pipe.md"]
    assert "is not a regular file" in reasons["socket.md"]


async def test_html_nested_too_deeply_is_refused_and_the_batch_goes_on(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    docs = tmp_path / "docs"
    write(docs / "deep.html", "<html><body>" + "<div>" * 3000 + "deep" + "</div>" * 3000)
    write(docs / "fine.md", "# Fine\n\nordinary file")
    kb = open_kb(make_settings())

    result = await kb.ingest_paths([docs], collection="docs")

    reasons = {Path(d.source).name: d.message or "" for d in result.documents}
    assert (result.added, result.failed) == (1, 1)
    assert "nested too deeply" in reasons["deep.html"]


async def test_linked_folders_inside_the_roots_are_followed_once_and_links_out_refused(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    root = tmp_path / "root"
    write(root / "docs" / "a.md", "# A\n\nguillemots")
    shared = write(root / "shared" / "b.md", "# B\n\nrazorbills")
    outside = write(tmp_path / "outside" / "c.md", "# C\n\nshags")
    (root / "docs" / "linked").symlink_to(root / "shared")
    (root / "docs" / "again").symlink_to(root / "shared")  # a second name for one folder
    (root / "docs" / "loop").symlink_to(root / "docs")  # would walk for ever
    (root / "docs" / "out").symlink_to(outside.parent)
    kb = open_kb(make_settings(allowed_roots=[root]))

    result = await kb.ingest_paths([root / "docs"], collection="docs")

    assert (result.added, result.failed) == (2, 1)
    assert await _sources(kb) == {str(root / "docs" / "a.md"), str(shared)}
    (refused,) = [d for d in result.documents if d.status == "failed"]
    assert refused.source == str(root / "docs" / "out")
    assert "outside the allowed roots" in (refused.message or "")
    assert await _hit_sources(kb, "shags") == []

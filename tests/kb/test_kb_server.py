"""The kb server through the SDK's in-memory client; every result checked against its schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixtures.mcp_session import session
from kb_helpers import write

from localmcp.servers.kb.server import build_server
from localmcp.servers.kb.service import KnowledgeBase
from localmcp.shared.config import Settings

OpenKB = Callable[[Settings], KnowledgeBase]
ALL_TOOLS = {"kb_list", "kb_stats", "kb_search", "kb_ask", "kb_ingest", "kb_delete"}


def _server(settings: Settings, open_kb: OpenKB) -> Any:
    return build_server(settings, kb=open_kb(settings))


async def test_every_tool_declares_an_output_schema_and_no_tool_asks_for_a_vector(
    make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    async with session(_server(make_settings(), open_kb)) as s:
        assert set(s.tools) == ALL_TOOLS
        for tool in s.tools.values():
            assert tool.output_schema is not None, tool.name
            params = tool.input_schema.get("properties", {})
            assert not {"vector", "embedding", "embeddings"} & set(params), tool.name


async def test_read_only_mode_hides_ingest_and_delete(
    make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    server = _server(make_settings(read_only=True), open_kb)
    async with session(server) as s:
        assert set(s.tools) == ALL_TOOLS - {"kb_ingest", "kb_delete"}
        listing = await s.ok("kb_list", {})
        assert listing["read_only"] is True
        assert "unknown tool: kb_ingest" in (await s.error("kb_ingest", {"text": "x"})).lower()
    assert "read-only" in server.instructions


async def test_keyword_only_server_says_so(
    make_settings: Callable[..., Settings], open_kb: OpenKB, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        server = _server(make_settings(), open_kb)
    assert "keyword (BM25) search only" in server.instructions
    assert any("keyword (BM25) search only" in r.getMessage() for r in caplog.records)
    async with session(server) as s:
        assert (await s.ok("kb_list", {}))["keyword_only"] is True


async def test_ingest_search_stats_delete_round_trip_with_progress(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    for i in range(3):
        write(tmp_path / "docs" / f"{i}.md", f"# Note {i}\n\nThe walrus number {i} eats fish.")
    async with session(_server(make_settings(), open_kb)) as s:
        ingest = await s.ok("kb_ingest", {"paths": [str(tmp_path / "docs")], "tags": ["zoo"]})
        assert (ingest["added"], ingest["failed"]) == (3, 0)
        assert s.progress and s.progress[-1][:2] == (3, 3)

        text = await s.ok(
            "kb_ingest",
            {
                "text": "# 海象\n\n海象吃鱼。walrus facts in Chinese.",
                "source": "notes/海象",
                "metadata": {"lang": "zh"},
            },
        )
        assert text["added"] == 1

        found = await s.ok("kb_search", {"query": "walrus", "top_k": 10, "tags": ["zoo"]})
        assert found["mode"] == "keyword"
        assert len(found["hits"]) == 3
        assert all(h["tags"] == ["zoo"] and h["metadata"] == {} for h in found["hits"])
        chinese = await s.ok("kb_search", {"query": "海象"})
        assert [h["metadata"] for h in chinese["hits"]] == [{"lang": "zh"}]

        stats = await s.ok("kb_stats", {"collection": "default"})
        assert stats["collections"][0]["documents"] == 4
        listing = await s.ok("kb_list", {})
        assert [(c["name"], c["documents"]) for c in listing["collections"]] == [("default", 4)]
        assert listing["collections"][0]["chunks"] == 4  # one short chunk per note

        by_id = await s.ok("kb_delete", {"doc_id": found["hits"][0]["doc_id"]})
        assert [d["source"] for d in by_id["deleted"]] == [found["hits"][0]["source"]]
        by_source = await s.ok("kb_delete", {"source": "notes/海象"})
        assert [(d["source"], d["chunks"]) for d in by_source["deleted"]] == [("notes/海象", 1)]
        deleted = await s.ok("kb_delete", {"source": str(tmp_path / "docs") + "/*"})
        assert len(deleted["deleted"]) == 2
        after = await s.ok("kb_list", {})
        assert (after["collections"][0]["documents"], after["collections"][0]["chunks"]) == (0, 0)
        assert (await s.ok("kb_search", {"query": "walrus"}))["hits"] == []
        missing = await s.error("kb_delete", {"doc_id": "0000"})
        assert "no document with doc_id '0000'" in missing


async def test_documents_are_readable_as_resources(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    write(tmp_path / "guide.md", "# Guide\n\nUse APT to install packages.\n\n## More\n\nDetails.")
    async with session(_server(make_settings(), open_kb)) as s:
        await s.ok("kb_ingest", {"paths": [str(tmp_path / "guide.md")], "collection": "docs"})
        hit = (await s.ok("kb_search", {"query": "APT", "collections": ["docs"]}))["hits"][0]

        templates = (await s.client.list_resource_templates()).resource_templates
        assert "kb://{collection}/{doc_id}" in {t.uri_template for t in templates}
        read = await s.client.read_resource(hit["uri"])
        body = read.contents[0].text  # type: ignore[union-attr]
        assert body.startswith("# Guide")
        assert f"Source: {tmp_path / 'guide.md'}" in body
        assert "Use APT to install packages." in body and "Details." in body

        listing = await s.client.read_resource("kb://collections")
        assert '"name": "docs"' in listing.contents[0].text  # type: ignore[union-attr]
        with pytest.raises(Exception, match="not in knowledge base 'docs'"):
            await s.client.read_resource("kb://docs/0123456789abcdef0123")


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("kb_search", {"query": ""}, "the query is empty"),
        ("kb_search", {"query": "x" * 100_000}, "kb.max_query_chars"),
        ("kb_search", {"query": "apt", "collections": ["my docs"]}, "invalid knowledge base name"),
        ("kb_search", {"query": "apt", "collections": ["知识库"]}, "invalid knowledge base name"),
        ("kb_ask", {"question": "   "}, "the query is empty"),
        ("kb_ingest", {"text": "x", "collection": "bad name"}, "invalid knowledge base name"),
        ("kb_ingest", {}, "give either paths or text"),
        ("kb_ingest", {"paths": ["/etc/passwd"], "text": "x"}, "give either paths or text"),
        ("kb_delete", {}, "exactly one of doc_id and source"),
        ("kb_delete", {"source": "*"}, "would delete every document"),
        ("kb_delete", {"source": " *"}, "would delete every document"),
        ("kb_ingest", {"text": "x", "collection": "Default"}, "does not tell 'Notes' from"),
    ],
)
async def test_bad_arguments_are_clear_tool_errors_and_change_nothing(
    make_settings: Callable[..., Settings],
    open_kb: OpenKB,
    tool: str,
    args: dict[str, Any],
    expected: str,
) -> None:
    async with session(_server(make_settings(), open_kb)) as s:
        await s.ok("kb_ingest", {"text": "# Base\n\napt text", "source": "base"})
        assert expected in await s.error(tool, args)
        stats = await s.ok("kb_stats", {})
        assert [(c["name"], c["documents"]) for c in stats["collections"]] == [("default", 1)]


async def test_ingest_outside_the_roots_reports_the_file_and_stores_nothing(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    async with session(_server(make_settings(allowed_roots=[root]), open_kb)) as s:
        result = await s.ok("kb_ingest", {"paths": ["/etc/passwd", "../outside.md"]})
        assert result["failed"] == 2 and result["added"] == 0
        assert all("outside the allowed roots" in d["message"] for d in result["documents"])


async def test_ask_without_relevant_passages_answers_plainly_without_a_model(
    make_settings: Callable[..., Settings], open_kb: OpenKB, closed_engine_env: dict[str, str]
) -> None:
    """Nothing relevant: no engine is needed (the configured port has nothing listening)."""
    backend = {"kind": "openai", "base_url": closed_engine_env["LOCALMCP_BACKEND__BASE_URL"]}
    async with session(_server(make_settings(backend=backend), open_kb)) as s:
        await s.ok("kb_ingest", {"text": "# Walrus\n\nWalruses eat clams.", "source": "w"})
        answer = await s.ok("kb_ask", {"question": "zqxv frobnicate"})
        assert answer["found"] is False and answer["sources"] == []
        assert "Nothing relevant" in answer["answer"]
        unreachable = await s.error("kb_ask", {"question": "what do walruses eat"})
        assert "no answer" in unreachable.lower() or "connect" in unreachable.lower()


@pytest.mark.engine
async def test_ask_through_the_server_cites_sources_from_the_real_engine(
    tmp_path: Path, engine_settings: Callable[..., Settings], open_kb: OpenKB
) -> None:
    settings = engine_settings(tmp_path, embed_model=None)
    async with session(_server(settings, open_kb)) as s:
        await s.ok(
            "kb_ingest",
            {"text": "# Walrus diet\n\nWalruses eat clams and other shellfish.", "source": "w"},
        )
        answer = await s.ok("kb_ask", {"question": "What do walruses eat?"})
    assert answer["found"] is True and answer["answer"].strip()
    assert answer["sources"][0]["source"] == "w" and answer["sources"][0]["n"] == 1
    assert answer["mode"] == "keyword"
    assert s.progress  # the model call is announced as progress


async def test_client_cancelling_an_ingest_leaves_no_half_document(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    open_kb: OpenKB,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    import anyio

    big = write(tmp_path / "big.md", "# Big\n\n" + "Skuas chase terns at sea. " * 1500)
    settings = make_settings(chunk_size=100, chunk_overlap=0)
    kb = open_kb(settings)
    insert = kb.store.insert_chunks
    first_batch_in = threading.Event()

    def slow_insert(collection: str, rows: list[dict[str, Any]]) -> None:
        insert(collection, rows)
        first_batch_in.set()
        threading.Event().wait(0.5)

    monkeypatch.setattr(kb.store, "insert_chunks", slow_insert)
    async with session(build_server(settings, kb=kb)) as s:
        with anyio.move_on_after(10) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(s.client.call_tool, "kb_ingest", {"paths": [str(big)]})
                while not first_batch_in.is_set():
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()  # the client gives up while the document is half in
        assert not scope.cancelled_caught, "the first batch was never written"

        with anyio.fail_after(10):  # the server abandons the write, then answers again
            while (await s.ok("kb_stats", {}))["collections"][0]["hidden_chunks"]:
                await anyio.sleep(0.1)
        stats = (await s.ok("kb_stats", {}))["collections"][0]
        assert (stats["documents"], stats["chunks"]) == (0, 0)
        assert (await s.ok("kb_search", {"query": "skuas"}))["hits"] == []

        monkeypatch.setattr(kb.store, "insert_chunks", insert)
        again = await s.ok("kb_ingest", {"paths": [str(big)]})
        assert (again["added"], again["failed"]) == (1, 0)
        assert (await s.ok("kb_search", {"query": "skuas"}))["hits"]


@pytest.mark.parametrize("preload", [True, False])
async def test_knowledge_bases_are_loaded_when_the_server_starts_unless_told_not_to(
    tmp_path: Path, make_settings: Callable[..., Settings], open_kb: OpenKB, preload: bool
) -> None:
    import anyio

    write(tmp_path / "a.md", "# A\n\nalbatross")
    settings = make_settings(preload=preload)
    first = KnowledgeBase.open(settings)
    await first.ingest_paths([tmp_path / "a.md"], collection="birds")
    first.close()

    kb = open_kb(settings)  # reopened: Milvus Lite starts with the collection released
    assert not kb.store.is_loaded("birds")
    async with session(build_server(settings, kb=kb)) as s:
        with anyio.move_on_after(20 if preload else 0.5):
            while not kb.store.is_loaded("birds"):
                await anyio.sleep(0.05)
        assert kb.store.is_loaded("birds") is preload
        hits = (await s.ok("kb_search", {"query": "albatross", "collections": ["birds"]}))["hits"]
        assert len(hits) == 1

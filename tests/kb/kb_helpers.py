"""Helpers for the kb tests: real FAQ sections, an MCP session that validates output schemas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import corpora
import jsonschema
from mcp import Client

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


class Session:
    """An in-memory MCP client that validates every structured result against its schema."""

    def __init__(self, client: Client, tools: dict[str, Any]) -> None:
        self.client = client
        self.tools = tools
        self.progress: list[tuple[float, float | None, str | None]] = []

    async def _on_progress(self, done: float, total: float | None, message: str | None) -> None:
        self.progress.append((done, total, message))

    async def ok(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Call a tool that must succeed; returns its validated structured content."""
        result = await self.client.call_tool(name, args, progress_callback=self._on_progress)
        assert not result.is_error, result.content
        schema = self.tools[name].output_schema
        assert schema is not None, f"{name} has no output schema"
        assert result.structured_content is not None
        jsonschema.validate(result.structured_content, schema)
        return result.structured_content

    async def error(self, name: str, args: dict[str, Any]) -> str:
        """Call a tool that must fail; returns the error text."""
        result = await self.client.call_tool(name, args, progress_callback=self._on_progress)
        assert result.is_error, result.structured_content
        text = result.content[0].text  # type: ignore[union-attr]
        assert "Traceback" not in text
        return text


@asynccontextmanager
async def session(server: Any) -> AsyncIterator[Session]:
    """A connected in-memory client of ``server``."""
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        yield Session(client, tools)

"""Fixtures for the kb tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import corpora
import pytest

from localmcp.servers.kb.service import KnowledgeBase
from localmcp.shared.config import KBSettings, Settings

# --- Real Debian documentation (see tests/corpora.py for what lies where) ---


@pytest.fixture(scope="session")
def faq_en_dir() -> Path:
    """Folder of the English Debian FAQ: ``<chapter>.en.html`` pages and their aliases."""
    return corpora.faq_dir("en")


@pytest.fixture(scope="session")
def faq_zh_dir() -> Path:
    """Folder of the Simplified Chinese Debian FAQ: ``<chapter>.zh-cn.html`` pages."""
    return corpora.faq_dir("zh-cn")


@pytest.fixture(scope="session")
def faq_pdf() -> Path:
    """The English Debian FAQ as a real 73-page PDF, gzip-compressed (``.pdf.gz``)."""
    return corpora.faq_pdf()


# --- end of corpus fixtures ---


# --- knowledge bases on real Milvus Lite files ---


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """``make_settings(**kb)``: settings with a fresh data dir and ``tmp_path`` as allowed root."""

    def make(backend: dict[str, Any] | None = None, **kb: Any) -> Settings:
        kb.setdefault("allowed_roots", [tmp_path])
        return Settings(data_dir=tmp_path / "data", kb=KBSettings(**kb), backend=backend or {})

    return make


@pytest.fixture
async def open_kb() -> AsyncIterator[Callable[[Settings], KnowledgeBase]]:
    """``open_kb(settings)``: an open knowledge base, closed when the test ends."""
    opened: list[KnowledgeBase] = []

    def open_(settings: Settings) -> KnowledgeBase:
        kb = KnowledgeBase.open(settings)
        opened.append(kb)
        return kb

    yield open_
    for kb in reversed(opened):
        await kb.aclose()
        kb.close()


@pytest.fixture(scope="session")
async def faq_kb(
    tmp_path_factory: pytest.TempPathFactory, faq_en_dir: Path, faq_zh_dir: Path
) -> AsyncIterator[KnowledgeBase]:
    """Keyword-only knowledge base of the real Debian FAQ: ``faq_en`` and ``faq_zh``."""
    root = tmp_path_factory.mktemp("faq_kb")
    settings = Settings(
        data_dir=root, kb=KBSettings(allowed_roots=[faq_en_dir.parent.parent, faq_zh_dir])
    )
    kb = KnowledgeBase.open(settings)
    en = await kb.ingest_paths([faq_en_dir], collection="faq_en")
    zh = await kb.ingest_paths([faq_zh_dir], collection="faq_zh")
    assert en.failed == 0 and zh.failed == 0, (en.documents, zh.documents)
    yield kb
    await kb.aclose()
    kb.close()


@pytest.fixture(scope="session")
def engine_settings(llama_engine: Any) -> Callable[..., Settings]:
    """``engine_settings(data_dir, **kb)``: settings that embed and chat with the real engine."""

    def make(data_dir: Path, **kb: Any) -> Settings:
        kb.setdefault("embed_model", llama_engine.model)
        kb.setdefault("embed_batch", 4)
        return Settings(
            data_dir=data_dir,
            kb=KBSettings(**kb),
            backend={
                "kind": "openai",
                "base_url": llama_engine.base_url,
                "model": llama_engine.model,
            },
        )

    return make


@pytest.fixture(scope="session")
async def dense_kb(
    tmp_path_factory: pytest.TempPathFactory, engine_settings: Callable[..., Settings]
) -> AsyncIterator[KnowledgeBase]:
    """Knowledge base ``sections`` embedded by the real engine: short real FAQ sections in
    English and Chinese (see ``kb_helpers.DENSE_SECTIONS``), one document each."""
    from kb_helpers import faq_sections

    settings = engine_settings(tmp_path_factory.mktemp("dense_kb"))
    kb = KnowledgeBase.open(settings)
    for source, text in faq_sections().items():
        result = await kb.ingest_text(text, source=source, collection="sections", tags=["faq"])
        assert result.added == 1, result
    yield kb
    await kb.aclose()
    kb.close()

"""The knowledge base as one object: the store, the backend and every operation the tools
and the ``localmcp kb`` commands share. Nothing here imports MCP."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from localmcp.shared.backends import Backend, connect_backend
from localmcp.shared.config import Settings
from localmcp.shared.errors import BadInput, NotFound

from . import ask as ask_module
from . import ingest as ingest_module
from . import search as search_module
from .embedding import Embedder
from .models import (
    AskResult,
    CollectionList,
    CollectionStats,
    CollectionSummary,
    DeletedDoc,
    DeleteResult,
    IngestResult,
    Progress,
    SearchMode,
    SearchResult,
    StatsResult,
)
from .search import Filters
from .store import DocRecord, Store, check_collection_name

logger = logging.getLogger(__name__)

KEYWORD_ONLY = (
    "no embedding model is configured (kb.embed_model): keyword (BM25) search only; set "
    "kb.embed_model to add dense and hybrid search"
)


def _utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


class KnowledgeBase:
    """A store plus the settings and engine it is searched and written with."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._backend: Backend | None = None
        self._backend_lock = anyio.Lock()
        model = settings.kb.embed_model or settings.backend.embed_model
        self.embedder = (
            Embedder(self.backend, model, batch=settings.kb.embed_batch) if model else None
        )
        if self.embedder is None:
            logger.warning("%s", KEYWORD_ONLY)

    @classmethod
    def open(cls, settings: Settings) -> KnowledgeBase:
        """Open the configured store (fails fast when another process holds the file)."""
        return cls(settings, Store.open(settings.kb, settings.data_dir))

    @property
    def keyword_only(self) -> bool:
        """True when no embedding model is configured."""
        return self.embedder is None

    async def backend(self) -> Backend:
        """The inference engine, connected on first use."""
        async with self._backend_lock:
            if self._backend is None:
                self._backend = await connect_backend(self.settings.backend)
            return self._backend

    async def aclose(self) -> None:
        """Close the engine connection (the store stays open; see ``close``)."""
        if self._backend is not None:
            await self._backend.aclose()
            self._backend = None

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    async def warm_up(self) -> None:
        """Load every knowledge base and read its manifest now, so that the first search
        does not wait for it (seconds at 100k chunks). A failure is logged and left for the
        first search to report."""

        def load() -> None:
            for listed in self.store.list_collections():  # which also caches their meta
                self.store.ensure_loaded(listed.name)
                self.store.live_generations(listed.name)

        try:
            # Abandoned on shutdown: the store refuses the thread's later calls once closed.
            await anyio.to_thread.run_sync(load, abandon_on_cancel=True)
        except Exception as exc:
            logger.warning("could not load the knowledge bases ahead of use: %s", exc)

    async def _run(self, fn: Any) -> Any:
        return await anyio.to_thread.run_sync(fn)

    def _collection(self, name: str | None) -> str:
        return check_collection_name(name or self.settings.kb.default_collection)

    async def _embedder(self) -> Embedder | None:
        if self.embedder is not None:
            await self.embedder.start()
        return self.embedder

    async def _reranker(self) -> Backend | None:
        return await self.backend() if self.settings.kb.rerank_model else None

    # -- reading ----------------------------------------------------------------------------

    async def list_collections(self) -> CollectionList:
        """The knowledge bases with document and chunk counts."""

        def collect() -> list[CollectionSummary]:
            out = []
            for meta in self.store.list_collections():
                docs = list(self.store.iter_docs(meta.name))
                out.append(
                    CollectionSummary(
                        name=meta.name,
                        documents=len(docs),
                        chunks=sum(d.chunk_count for d in docs),
                        embed_model=meta.embed_model,
                        dim=meta.dim,
                        analyzer=meta.analyzer,
                        created_at=datetime.fromtimestamp(meta.created_at, UTC),
                    )
                )
            return out

        return CollectionList(
            collections=await self._run(collect),
            store=self.store.target.describe(),
            default_collection=self.settings.kb.default_collection,
            embed_model=self.embedder.model if self.embedder else None,
            keyword_only=self.keyword_only,
            read_only=self.settings.kb.read_only,
        )

    async def stats(self, collection: str | None = None) -> StatsResult:
        """Figures for one knowledge base, or all of them."""

        def one(name: str) -> CollectionStats:
            meta = self.store.meta(name)
            assert meta is not None
            docs = list(self.store.iter_docs(name))
            chunks = sum(d.chunk_count for d in docs)
            rows = self.store.count_chunks(name)
            tags: Counter[str] = Counter(t for d in docs for t in d.tags)
            warnings = []
            if self.embedder and meta.embed_model and meta.embed_model != self.embedder.model:
                warnings.append(
                    f"embedded with {meta.embed_model!r}, but {self.embedder.model!r} is "
                    "configured: dense search is refused until they match."
                )
            if self.embedder is None and meta.embed_model:
                warnings.append(f"{KEYWORD_ONLY}; this knowledge base has dense vectors.")
            return CollectionStats(
                name=name,
                documents=len(docs),
                chunks=chunks,
                hidden_chunks=max(0, rows - chunks),
                characters=sum(d.char_count for d in docs),
                formats=dict(Counter(d.format for d in docs)),
                tags=dict(tags.most_common(50)),
                embed_model=meta.embed_model,
                dim=meta.dim,
                analyzer=meta.analyzer,
                created_at=datetime.fromtimestamp(meta.created_at, UTC),
                last_ingested_at=_utc(max((d.ingested_at for d in docs), default=None)),
                warnings=warnings,
            )

        def collect() -> list[CollectionStats]:
            if collection:
                return [one(self._collection(collection))]
            return [one(m.name) for m in self.store.list_collections()]

        return StatsResult(store=self.store.target.describe(), collections=await self._run(collect))

    async def read_document(self, collection: str, doc_id: str) -> tuple[DocRecord, str]:
        """A document's record and its text, rebuilt from its chunks."""
        name = self._collection(collection)

        def read() -> tuple[DocRecord, str]:
            record = self.store.get_docs(name, [doc_id]).get(doc_id)
            if record is None:
                raise NotFound(
                    f"document {doc_id!r} is not in knowledge base {name!r}.",
                    hint="Take doc ids from kb_search results (doc_id or uri).",
                    collection=name,
                )
            return record, rebuild_text(self.store.doc_chunks(name, record))

        return await self._run(read)

    # -- writing ----------------------------------------------------------------------------

    def _ingest_context(self, embedder: Embedder | None) -> ingest_module.IngestContext:
        return ingest_module.IngestContext(self.store, self.settings.kb, embedder)

    async def ingest_paths(
        self,
        paths: Sequence[str | Path],
        *,
        collection: str | None = None,
        roots: Sequence[Path] | None = None,
        tags: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> IngestResult:
        """Ingest files and folders under the allowed roots (config roots plus ``roots``)."""
        all_roots = [*self.settings.kb.allowed_roots, *(roots or [])]
        context = self._ingest_context(await self._embedder())
        return await ingest_module.ingest_paths(
            context,
            self._collection(collection),
            paths,
            roots=all_roots,
            tags=tags,
            metadata=metadata,
            progress=progress,
        )

    async def ingest_text(
        self,
        text: str,
        *,
        collection: str | None = None,
        source: str | None = None,
        title: str | None = None,
        format: str = "markdown",
        tags: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> IngestResult:
        """Ingest raw text as one document."""
        context = self._ingest_context(await self._embedder())
        return await ingest_module.ingest_text(
            context,
            self._collection(collection),
            text,
            source=source,
            title=title,
            format=format,
            tags=tags,
            metadata=metadata,
            progress=progress,
        )

    async def delete(
        self,
        *,
        collection: str | None = None,
        doc_id: str | None = None,
        source: str | None = None,
    ) -> DeleteResult:
        """Remove a document by id, or every document with this source (``*`` suffix: prefix)."""
        name = self._collection(collection)
        if bool(doc_id) == bool(source):
            raise BadInput(
                "give exactly one of doc_id and source.",
                hint="doc_id comes from kb_search results; source is the path or label.",
            )
        if source is not None and not source.removesuffix("*").strip():
            raise BadInput(
                f"source {source!r} would delete every document of the knowledge base.",
                hint="Name a source or a folder prefix such as '/home/me/notes/*'; to remove a "
                "whole knowledge base, run `localmcp kb drop NAME`.",
            )

        def run() -> DeleteResult:
            self.store.meta(name)
            if doc_id:
                records = list(self.store.get_docs(name, [doc_id]).values())
            elif source and source.endswith("*"):
                records = list(self.store.iter_docs(name, source[:-1]))
            else:
                record = self.store.find_by_source(name, source or "")
                records = [record] if record else []
            if not records:
                raise NotFound(
                    f"no document with {'doc_id' if doc_id else 'source'} "
                    f"{doc_id or source!r} in knowledge base {name!r}.",
                    hint="kb_search shows doc ids and sources; end a source with '*' to delete "
                    "everything under a folder.",
                    collection=name,
                )
            deleted = []
            for record in records:
                chunks = self.store.delete_doc(name, record.doc_id)
                deleted.append(
                    DeletedDoc(doc_id=record.doc_id, source=record.source, chunks=chunks)
                )
                logger.info("deleted %s from %s (%d chunks)", record.source, name, chunks)
            return DeleteResult(collection=name, deleted=deleted)

        return await self._run(run)

    async def drop(self, collection: str) -> None:
        """Delete a whole knowledge base."""
        name = self._collection(collection)
        await self._run(lambda: self.store.drop_collection(name))

    # -- searching --------------------------------------------------------------------------

    async def search(
        self,
        query: str,
        *,
        collections: Sequence[str] | None = None,
        top_k: int = 5,
        mode: SearchMode | None = None,
        filters: Filters | None = None,
    ) -> SearchResult:
        """Search one or several knowledge bases."""
        return await search_module.search(
            self.store,
            self.settings.kb,
            await self._embedder(),
            query,
            collections=collections,
            top_k=top_k,
            mode=mode,
            filters=filters,
            rerank=await self._reranker(),
        )

    async def ask(
        self,
        question: str,
        *,
        collections: Sequence[str] | None = None,
        top_k: int | None = None,
        mode: SearchMode | None = None,
        filters: Filters | None = None,
        model: str | None = None,
        progress: Progress | None = None,
    ) -> AskResult:
        """Answer from the knowledge base with [n] citations."""
        return await ask_module.ask(
            self.store,
            self.settings,
            await self._embedder(),
            self.backend,
            question,
            collections=collections,
            top_k=top_k,
            mode=mode,
            filters=filters,
            model=model,
            rerank=await self._reranker(),
            progress=progress,
        )


def rebuild_text(chunks: list[dict[str, Any]]) -> str:
    """A document's text from its ordered chunks, overlaps removed by their offsets."""
    parts: list[str] = []
    end = 0
    for chunk in chunks:
        start, text = int(chunk["start"]), chunk["text"]
        if start + len(text) <= end:
            continue
        if start < end:
            text = text[end - start :]
        elif start > end and parts:
            parts.append("\n\n")
        parts.append(text)
        end = start + len(chunk["text"])
    return "".join(parts)

"""Search: keyword (BM25), dense or hybrid over one or several knowledge bases.

The query is checked, embedded by the server itself when a dense leg is needed, and run in
each collection through the store; several collections are merged by reciprocal rank (their
BM25 scores are not on one scale). With a rerank model configured the fused candidates are
re-ordered by the engine's rerank endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio

from localmcp.shared.backends import Backend
from localmcp.shared.config import KBSettings
from localmcp.shared.errors import BadInput, ConfigError, Unsupported

from .embedding import Embedder
from .models import SearchHit, SearchMode, SearchResult
from .store import ChunkHit, CollectionMeta, Store, check_collection_name, prefix_filter, quote

logger = logging.getLogger(__name__)

MAX_TOP_K = 100
ALL = "*"


@dataclass(frozen=True)
class Filters:
    """Restrictions on what a search may return."""

    source: str | None = None
    tags: tuple[str, ...] = ()
    doc_id: str | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None

    def expression(self) -> str:
        """The Milvus filter expression ('' for none)."""
        parts: list[str] = []
        if self.source:
            if self.source.endswith("*"):
                parts.append(prefix_filter("source", self.source[:-1]))
            else:
                parts.append(f"source == {quote(self.source)}")
        if self.tags:
            parts.append(f"array_contains_any(tags, [{', '.join(quote(t) for t in self.tags)}])")
        if self.doc_id:
            parts.append(f"doc_id == {quote(self.doc_id)}")
        if self.modified_after is not None:
            parts.append(f"modified_at >= {_epoch(self.modified_after)!r}")
        if self.modified_before is not None:
            parts.append(f"modified_at <= {_epoch(self.modified_before)!r}")
        return " and ".join(parts)


def _epoch(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def check_query(query: str, settings: KBSettings) -> str:
    """The query stripped; ``BadInput`` when empty or longer than kb.max_query_chars."""
    text = (query or "").strip()
    if not text:
        raise BadInput("the query is empty.", hint="Ask a question or give some keywords.")
    if len(text) > settings.max_query_chars:
        raise BadInput(
            f"the query is {len(text):,} characters, over the kb.max_query_chars limit of "
            f"{settings.max_query_chars:,}.",
            hint="Shorten it to the words or question that matter (or raise kb.max_query_chars).",
        )
    return text


def requested_names(names: Sequence[str] | None, default: str) -> list[str] | None:
    """The checked, de-duplicated names a call gives (the default when none); None for all."""
    if not names:
        names = [default]
    if ALL in names:
        return None
    return list(dict.fromkeys(check_collection_name(name) for name in names))


def resolve_collections(
    store: Store, names: Sequence[str] | None, default: str
) -> list[CollectionMeta]:
    """The knowledge bases a call names: default one, several, or ``"*"`` for all."""
    wanted = requested_names(names, default)
    if wanted is None:
        metas = store.list_collections()
        if not metas:
            raise BadInput(
                "there are no knowledge bases yet.",
                hint="Ingest documents first (kb_ingest / `localmcp kb ingest`).",
            )
        return metas
    metas = []
    for name in wanted:
        meta = store.meta(name)
        assert meta is not None
        metas.append(meta)
    return metas


async def _collections(
    store: Store, names: Sequence[str] | None, default: str
) -> list[CollectionMeta]:
    """``resolve_collections``, answered on the event loop when every name is known already."""
    wanted = requested_names(names, default)
    if wanted is not None:
        cached = [store.cached_meta(name) for name in wanted]
        if all(meta is not None for meta in cached):
            return cached  # type: ignore[return-value]
    return await anyio.to_thread.run_sync(lambda: resolve_collections(store, names, default))


def plan_mode(
    requested: SearchMode | None, meta: CollectionMeta, embedder: Embedder | None
) -> tuple[SearchMode, str | None]:
    """The mode to run in one collection, and a warning when it differs from the request."""
    mode: SearchMode = requested or ("hybrid" if embedder is not None else "keyword")
    if mode == "keyword":
        return mode, None
    problem: str | None = None
    if embedder is None:
        problem = "no embedding model is configured (kb.embed_model), so only keyword search works"
    elif meta.embed_model is None:
        problem = f"knowledge base {meta.name!r} has no dense vectors (ingested keyword-only)"
    elif meta.embed_model != embedder.model or meta.dim != embedder.dim:
        problem = (
            f"knowledge base {meta.name!r} was embedded with {meta.embed_model!r} but the "
            f"configured model is {embedder.model!r}"
        )
    if problem is None:
        return mode, None
    if mode == "dense":
        raise ConfigError(
            f"dense search is not possible: {problem}.",
            hint="Use mode 'keyword', or configure the knowledge base's embedding model; to "
            "re-embed, drop it and ingest again with the new model.",
            collection=meta.name,
        )
    return "keyword", f"{problem}: used keyword search."


def _merge(per_collection: list[list[ChunkHit]], limit: int, k: int) -> list[ChunkHit]:
    """Reciprocal-rank merge of ranked lists from several collections."""
    if len(per_collection) == 1:
        return per_collection[0][:limit]
    scored: list[tuple[float, int, ChunkHit]] = []
    for hits in per_collection:
        for rank, hit in enumerate(hits):
            scored.append((1.0 / (k + rank + 1), -rank, hit))
    scored.sort(key=lambda t: (t[0], t[1], t[2].score), reverse=True)
    return [hit for _, _, hit in scored[:limit]]


async def search(
    store: Store,
    settings: KBSettings,
    embedder: Embedder | None,
    query: str,
    *,
    collections: Sequence[str] | None = None,
    top_k: int = 5,
    mode: SearchMode | None = None,
    filters: Filters | None = None,
    rerank: Backend | None = None,
) -> SearchResult:
    """Search one or several knowledge bases; hits carry text, score, source and headings."""
    text = check_query(query, settings)
    if not 1 <= top_k <= MAX_TOP_K:
        raise BadInput(f"top_k {top_k} is out of range.", hint=f"Use 1 to {MAX_TOP_K}.")
    metas = await _collections(store, collections, settings.default_collection)
    expr = (filters or Filters()).expression()
    candidates = max(top_k, settings.rerank_candidates) if rerank is not None else top_k

    warnings: list[str] = []
    plans: list[tuple[CollectionMeta, SearchMode]] = []
    for meta in metas:
        run_mode, warning = plan_mode(mode, meta, embedder)
        if warning:
            warnings.append(warning)
            logger.warning("%s", warning)
        plans.append((meta, run_mode))
    used = {run_mode for _, run_mode in plans}
    vector: list[float] | None = None
    if used != {"keyword"}:
        assert embedder is not None
        vector = await embedder.embed_query(text)

    def run_all() -> list[list[ChunkHit]]:
        return [
            store.search(
                meta.name,
                mode=run_mode,
                query=text,
                vector=vector,
                limit=candidates,
                expr=expr,
                fusion=settings.fusion,
                rrf_k=settings.rrf_k,
                dense_weight=settings.dense_weight,
            )
            for meta, run_mode in plans
        ]

    # One trip to a worker thread for every collection: the hop costs as much as a search.
    per_collection = await anyio.to_thread.run_sync(run_all)
    hits = _merge(per_collection, candidates, settings.rrf_k)

    reranked = False
    if rerank is not None and settings.rerank_model and hits:
        try:
            scores = await rerank.rerank(settings.rerank_model, text, [h.text for h in hits])
        except Unsupported as exc:
            warnings.append(f"reranking skipped: {exc}")
            logger.warning("reranking skipped: %s", exc)
        else:
            for hit, score in zip(hits, scores, strict=True):
                hit.score = score
            hits.sort(key=lambda h: h.score, reverse=True)
            reranked = True
    hits = hits[:top_k]

    used_mode: SearchMode = (
        "hybrid" if "hybrid" in used else "dense" if "dense" in used else "keyword"
    )
    return SearchResult(
        query=text,
        mode=used_mode,
        collections=[m.name for m in metas],
        reranked=reranked,
        hits=[to_hit(rank, h) for rank, h in enumerate(hits, start=1)],
        warnings=warnings,
    )


def doc_uri(collection: str, doc_id: str) -> str:
    """The resource URI of one document."""
    return f"kb://{collection}/{doc_id}"


def to_hit(rank: int, hit: ChunkHit) -> SearchHit:
    """The typed form of a store hit."""
    return SearchHit(
        rank=rank,
        score=hit.score,
        collection=hit.collection,
        doc_id=hit.doc_id,
        source=hit.source,
        title=hit.title,
        heading_path=hit.heading_path,
        position=hit.position,
        text=hit.text,
        tags=hit.tags,
        metadata=hit.metadata,
        modified_at=datetime.fromtimestamp(hit.modified_at, UTC) if hit.modified_at else None,
        uri=doc_uri(hit.collection, hit.doc_id),
    )

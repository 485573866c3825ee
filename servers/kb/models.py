"""Typed results of the knowledge-base operations (the tools' structured output)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

SearchMode = Literal["hybrid", "dense", "keyword"]
DocStatus = Literal["added", "updated", "unchanged", "duplicate", "removed", "failed"]

#: ``await progress(done, total, message)``; the server forwards it as MCP progress.
Progress = Callable[[float, float | None, str | None], Awaitable[None]]


class CollectionSummary(BaseModel):
    """One knowledge base."""

    name: str = Field(description="Knowledge base (Milvus collection) name.")
    documents: int = Field(description="Documents in it.")
    chunks: int = Field(description="Searchable chunks in it.")
    embed_model: str | None = Field(description="Embedding model of its dense vectors, if any.")
    dim: int | None = Field(description="Dimension of its dense vectors, if any.")
    analyzer: str = Field(description="Text analyzer of its keyword (BM25) index.")
    created_at: datetime = Field(description="When it was created (UTC).")


class CollectionList(BaseModel):
    """The knowledge bases of the store and how this server searches them."""

    collections: list[CollectionSummary]
    store: str = Field(description="Where the data lives (Milvus Lite file or server URI).")
    default_collection: str = Field(description="Used when a tool is given no collection.")
    embed_model: str | None = Field(description="Embedding model configured now, if any.")
    keyword_only: bool = Field(description="True when no embedding model is configured.")
    read_only: bool = Field(description="True when ingest and delete are disabled.")


class CollectionStats(BaseModel):
    """Figures about one knowledge base."""

    name: str
    documents: int
    chunks: int = Field(description="Chunks visible to search.")
    hidden_chunks: int = Field(
        description="Chunk rows not visible: writes in progress or left by an interrupted "
        "ingest (cleaned up by the next ingest)."
    )
    characters: int = Field(description="Total characters of all documents.")
    formats: dict[str, int] = Field(description="Documents per format.")
    tags: dict[str, int] = Field(description="Documents per tag (the 50 most common).")
    embed_model: str | None
    dim: int | None
    analyzer: str
    created_at: datetime
    last_ingested_at: datetime | None
    warnings: list[str] = Field(default_factory=list)


class StatsResult(BaseModel):
    """Statistics of one or all knowledge bases."""

    store: str
    collections: list[CollectionStats]


class DocOutcome(BaseModel):
    """What happened to one document of an ingest."""

    source: str = Field(description="Canonical path, URL or label of the document.")
    status: DocStatus
    doc_id: str | None = None
    chunks: int = Field(0, description="Chunks written (0 when skipped or failed).")
    message: str | None = Field(None, description="Why it failed or was skipped.")
    warnings: list[str] = Field(default_factory=list)


class IngestResult(BaseModel):
    """The outcome of one ingest: counts, then each document (the first 500)."""

    collection: str
    added: int
    updated: int
    unchanged: int
    duplicates: int = Field(description="Skipped: same content as a document already stored.")
    removed: int = Field(description="Documents whose files were deleted from an ingested folder.")
    failed: int
    chunks_written: int
    seconds: float
    embed_model: str | None = Field(
        description="Model that embedded the chunks; None: keyword only."
    )
    documents: list[DocOutcome]
    documents_truncated: bool = Field(False, description="True when more than 500 documents.")
    recovered: int = Field(0, description="Unfinished writes of an interrupted ingest cleaned up.")
    not_reached: int = Field(
        0,
        description="Files left untouched because the ingest time limit (kb.ingest_timeout) "
        "ran out; run the same ingest again to continue.",
    )
    warnings: list[str] = Field(default_factory=list)


class DeletedDoc(BaseModel):
    """One removed document."""

    doc_id: str
    source: str
    chunks: int


class DeleteResult(BaseModel):
    """Documents removed from a knowledge base."""

    collection: str
    deleted: list[DeletedDoc]


class SearchHit(BaseModel):
    """One matching chunk."""

    rank: int = Field(description="1 for the best match.")
    score: float = Field(
        description="Score of the mode used: BM25 (keyword), cosine similarity (dense), fused "
        "rank score (hybrid) or the reranker's relevance (reranked)."
    )
    collection: str
    doc_id: str
    source: str
    title: str
    heading_path: list[str] = Field(description="Headings above the chunk, outermost first.")
    position: int = Field(description="Chunk number within its document, from 0.")
    text: str
    tags: list[str]
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Extra fields given with the document at ingest."
    )
    modified_at: datetime | None = Field(description="Document's modification time (UTC).")
    uri: str = Field(description="Resource URI of the whole document (kb://collection/doc_id).")


class SearchResult(BaseModel):
    """Chunks matching a query, best first."""

    query: str
    mode: SearchMode = Field(description="Mode actually used (keyword when no embeddings).")
    collections: list[str]
    reranked: bool
    hits: list[SearchHit]
    warnings: list[str] = Field(default_factory=list)


class AskSource(BaseModel):
    """A numbered source given to the model; ``[n]`` in the answer points here."""

    n: int
    collection: str
    doc_id: str
    source: str
    title: str
    heading_path: list[str]
    uri: str
    score: float


class AskResult(BaseModel):
    """An answer from the knowledge base with its sources."""

    question: str
    found: bool = Field(description="False when nothing relevant was found; no answer invented.")
    answer: str
    sources: list[AskSource] = Field(description="Numbered sources the answer may cite as [n].")
    cited: list[int] = Field(description="Source numbers the answer actually cites.")
    model: str | None = Field(description="Chat model that wrote the answer.")
    mode: SearchMode
    warnings: list[str] = Field(default_factory=list)

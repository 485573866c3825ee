"""Ingestion: files and folders (or raw text) into a knowledge base, incrementally.

A folder is walked recursively with the include / exclude globs; every file is resolved to
its canonical path under the allowed roots, so two spellings of one file are one document
(its id is a hash of that path). A file whose content, chunking and embedding model are
unchanged is skipped; one whose text equals another stored document's is skipped as a
duplicate; a changed one is rewritten; a document whose file was deleted from an ingested
folder is removed. Every per-file failure is collected in the result and the batch goes on.
Writes go through the store's generation protocol, so an interrupted ingest leaves no half
document visible and the next run finishes the job.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from localmcp.shared.config import KBSettings
from localmcp.shared.documents import Chunk, Document, chunk_document, document_from_text
from localmcp.shared.errors import BadInput, ConfigError, LocalMCPError, NotFound
from localmcp.shared.textio import MIB, resolve_under_roots, size_limit_error

from .embedding import Embedder
from .models import DocOutcome, IngestResult, Progress
from .store import (
    MAX_METADATA_BYTES,
    MAX_SOURCE_BYTES,
    MAX_TAG_BYTES,
    MAX_TAGS,
    MAX_TEXT_BYTES,
    CollectionMeta,
    DocRecord,
    Store,
    fit_bytes,
)

logger = logging.getLogger(__name__)

CHUNKER_VERSION = "c1"
MAX_REPORTED = 500
INSERT_ROWS = 256
HEADING_SEPARATOR = " > "


@dataclass
class IngestContext:
    """What an ingest needs: the store, the kb settings and the embedder (None: keyword)."""

    store: Store
    settings: KBSettings
    embedder: Embedder | None


@dataclass
class _Tally:
    """Running counts of one ingest."""

    outcomes: list[DocOutcome] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    total: int = 0

    def add(self, outcome: DocOutcome) -> None:
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        self.chunks += outcome.chunks
        self.total += 1
        if len(self.outcomes) < MAX_REPORTED:
            self.outcomes.append(outcome)


def doc_id_for(source: str) -> str:
    """The stable id of the document at ``source`` (canonical path, URL or label)."""
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def chunking_key(settings: KBSettings) -> str:
    """What decides the chunks besides the text; a change re-chunks every document."""
    return f"{CHUNKER_VERSION}/{settings.chunk_size}/{settings.chunk_overlap}"


def check_tags(tags: Sequence[str] | None) -> list[str]:
    """Validated tags: at most 32, each 1-128 bytes, duplicates dropped."""
    cleaned: list[str] = []
    for tag in tags or []:
        tag = str(tag).strip()
        if not tag:
            raise BadInput("empty tag.", hint="Tags are short non-empty labels, e.g. 'faq'.")
        if len(tag.encode("utf-8")) > MAX_TAG_BYTES:
            raise BadInput(
                f"tag {tag[:40]!r}... is longer than {MAX_TAG_BYTES} bytes.",
                hint="Use short labels.",
            )
        if tag not in cleaned:
            cleaned.append(tag)
    if len(cleaned) > MAX_TAGS:
        raise BadInput(f"{len(cleaned)} tags given; at most {MAX_TAGS} are kept per document.")
    return cleaned


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Metadata that fits a document: JSON-serialisable, at most 16 KiB."""
    import json

    if not metadata:
        return {}
    try:
        size = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise BadInput(f"metadata is not JSON-serialisable: {exc}.") from exc
    if size > MAX_METADATA_BYTES:
        raise BadInput(
            f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are kept.",
            hint="Keep metadata to a few small fields.",
        )
    return dict(metadata)


def ensure_collection(ctx: IngestContext, name: str) -> tuple[CollectionMeta, bool, list[str]]:
    """The knowledge base to write into (created if new): meta, whether to embed, warnings."""
    store, embedder = ctx.store, ctx.embedder
    meta = store.meta(name, required=False)
    if meta is None:
        if embedder is None:
            meta = store.create_collection(name, embed_model=None, dim=None)
        else:
            meta = store.create_collection(name, embed_model=embedder.model, dim=embedder.dim)
        return meta, embedder is not None, []

    if meta.embed_model is None:
        if embedder is None:
            return meta, False, []
        return (
            meta,
            False,
            [
                f"knowledge base {name!r} was created without embeddings: chunks are stored for "
                "keyword search only. For dense search, ingest into a new knowledge base, or "
                f"drop {name!r} and ingest again."
            ],
        )
    if embedder is None:
        raise ConfigError(
            f"knowledge base {name!r} holds dense vectors from embedding model "
            f"{meta.embed_model!r} (dim {meta.dim}), but no embedding model is configured.",
            hint=f"Set kb.embed_model = {meta.embed_model!r} (LOCALMCP_KB__EMBED_MODEL) to "
            "ingest into it, or ingest into another knowledge base.",
            collection=name,
        )
    check_model(meta, embedder)
    return meta, True, []


def check_model(meta: CollectionMeta, embedder: Embedder) -> None:
    """Refuse to mix vectors of two embedding models in one knowledge base."""
    if meta.embed_model == embedder.model and meta.dim == embedder.dim:
        return
    raise ConfigError(
        f"knowledge base {meta.name!r} was embedded with {meta.embed_model!r} (dim {meta.dim}); "
        f"the configured embedding model is {embedder.model!r} (dim {embedder.dim}). "
        "Vectors of two models cannot be compared, so this is refused.",
        hint=f"Set kb.embed_model back to {meta.embed_model!r}, or re-embed: "
        f"`localmcp kb drop {meta.name} --yes` then ingest the same files again with the new "
        "model (or ingest them into a new knowledge base name).",
        collection=meta.name,
    )


# --- walking folders ----------------------------------------------------------------------


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    """Does ``rel`` (a POSIX relative path) or any of its trailing parts match a pattern?"""
    parts = rel.split("/")
    for i in range(len(parts)):
        tail = "/".join(parts[i:])
        if any(fnmatch.fnmatchcase(tail, p) for p in patterns):
            return True
    return False


def scan_folder(
    folder: Path, include: Sequence[str], exclude: Sequence[str], roots: Sequence[Path] = ()
) -> tuple[list[Path], list[tuple[str, LocalMCPError]], int]:
    """Files under ``folder`` matching ``include`` and not ``exclude``; linked folders refused
    (with why); and how many files were skipped by the globs.

    A linked folder is followed when it leads inside ``roots`` (every real folder is walked
    once, so a link loop ends); one leading elsewhere is refused, not walked.
    """
    found: list[Path] = []
    refused: list[tuple[str, LocalMCPError]] = []
    skipped = 0
    walked: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        walked.add(os.path.realpath(dirpath))
        rel_dir = Path(dirpath).relative_to(folder).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep: list[str] = []
        for name in sorted(dirnames):
            if _matches(f"{rel_dir}{name}/", exclude):
                continue
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                try:
                    real = str(resolve_under_roots(path, roots)) if roots else None
                except (BadInput, NotFound) as exc:
                    refused.append((path, exc))
                    continue
                target = real or os.path.realpath(path)
                if target in walked:
                    continue  # a loop, or a folder already walked through another name
                walked.add(target)
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = rel_dir + name
            if _matches(rel, exclude) or not _matches(rel, include):
                skipped += 1
                continue
            found.append(Path(dirpath) / name)
    return found, refused, skipped


# --- chunks -------------------------------------------------------------------------------


def _fit_chunks(chunks: list[Chunk]) -> list[Chunk]:
    """Split any chunk whose UTF-8 form exceeds the Milvus field size (rare: long chunks of
    4-byte characters), keeping offsets right."""
    out: list[Chunk] = []
    for chunk in chunks:
        if len(chunk.text.encode("utf-8", "surrogatepass")) <= MAX_TEXT_BYTES - 2048:
            out.append(chunk)
            continue
        text, start = chunk.text, chunk.start
        while text:
            piece = fit_bytes(text, MAX_TEXT_BYTES - 2048)
            out.append(Chunk(piece, chunk.heading_path, 0, start))
            start += len(piece)
            text = text[len(piece) :]
    return [Chunk(c.text, c.heading_path, i, c.start) for i, c in enumerate(out)]


def _search_text(doc: Document, chunk: Chunk) -> str:
    """What BM25 indexes and what is embedded: title and headings, then the chunk."""
    headings = list(chunk.heading_path)
    if doc.title and (not headings or headings[0] != doc.title):
        headings.insert(0, doc.title)
    head = HEADING_SEPARATOR.join(headings)
    return fit_bytes(f"{head}\n\n{chunk.text}" if head else chunk.text, MAX_TEXT_BYTES)


# --- writing one document -----------------------------------------------------------------


async def write_document(
    ctx: IngestContext,
    collection: str,
    doc: Document,
    *,
    embed: bool,
    tags: list[str],
    metadata: dict[str, Any],
    existing: DocRecord | None,
) -> DocOutcome:
    """Chunk, embed and store one document under a new generation; the old one goes after."""
    store, settings = ctx.store, ctx.settings
    doc_id = doc_id_for(doc.source)
    chunks = await anyio.to_thread.run_sync(
        lambda: _fit_chunks(
            chunk_document(doc, size=settings.chunk_size, overlap=settings.chunk_overlap)
        )
    )
    if not chunks:
        raise BadInput(f"{doc.source}: no text to index after chunking.", path=doc.source)

    gen = secrets.token_hex(6)
    modified = doc.modified_at if doc.modified_at is not None else time.time()
    source = fit_bytes(doc.source, MAX_SOURCE_BYTES)
    await anyio.to_thread.run_sync(lambda: store.begin_doc(collection, doc_id, gen, source))
    try:
        rows: list[dict[str, Any]] = []
        written = 0
        batch = ctx.settings.embed_batch if embed else INSERT_ROWS
        for first in range(0, len(chunks), batch):
            part = chunks[first : first + batch]
            search_texts = [_search_text(doc, c) for c in part]
            vectors: list[list[float]] | None = None
            if embed:
                assert ctx.embedder is not None
                vectors = await ctx.embedder.embed(search_texts)
            for i, chunk in enumerate(part):
                row: dict[str, Any] = {
                    "id": f"{doc_id}.{gen}.{chunk.position}",
                    "doc_id": doc_id,
                    "gen": gen,
                    "source": source,
                    "title": fit_bytes(doc.title, 1024),
                    "heading_path": list(chunk.heading_path),
                    "position": chunk.position,
                    "start": chunk.start,
                    "text": chunk.text,
                    "search_text": search_texts[i],
                    "content_hash": doc.content_hash,
                    "modified_at": modified,
                    "tags": tags,
                    "metadata": metadata,
                }
                if vectors is not None:
                    row["dense"] = vectors[i]
                rows.append(row)
            if len(rows) >= INSERT_ROWS or first + batch >= len(chunks):
                await anyio.to_thread.run_sync(lambda r=rows: store.insert_chunks(collection, r))
                written += len(rows)
                rows = []
                logger.debug("inserted %d/%d chunks of %s", written, len(chunks), doc.source)

        record = DocRecord(
            doc_id=doc_id,
            source=source,
            title=doc.title,
            format=doc.format,
            content_hash=doc.content_hash,
            gen=gen,
            chunk_count=len(chunks),
            char_count=len(doc.text),
            modified_at=modified,
            ingested_at=time.time(),
            tags=tags,
            metadata=metadata,
            chunking=chunking_key(settings),
            embed_model=ctx.embedder.model if embed and ctx.embedder else "",
        )
        await anyio.to_thread.run_sync(lambda: store.commit_doc(collection, record))
    except BaseException:
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(lambda: store.abandon_doc(collection, doc_id, gen))
            except Exception:
                logger.warning("could not undo the partial write of %s", doc.source, exc_info=True)
        raise
    logger.info("ingested %s: %d chunks (%s)", doc.source, len(chunks), collection)
    return DocOutcome(
        source=doc.source,
        status="updated" if existing else "added",
        doc_id=doc_id,
        chunks=len(chunks),
        warnings=list(doc.warnings),
    )


def _is_unchanged(
    existing: DocRecord | None,
    doc: Document,
    settings: KBSettings,
    embed_model: str,
    tags: list[str],
    metadata: dict[str, Any],
) -> bool:
    return (
        existing is not None
        and existing.content_hash == doc.content_hash
        and existing.chunking == chunking_key(settings)
        and existing.embed_model == embed_model
        and existing.tags == tags
        and existing.metadata == metadata
    )


async def _ingest_one(
    ctx: IngestContext,
    collection: str,
    doc: Document,
    *,
    embed: bool,
    tags: list[str],
    metadata: dict[str, Any],
    existing: DocRecord | None,
) -> DocOutcome:
    """Skip an unchanged or duplicate document, else write it."""
    store = ctx.store
    doc_id = doc_id_for(doc.source)
    model = ctx.embedder.model if embed and ctx.embedder else ""
    if _is_unchanged(existing, doc, ctx.settings, model, tags, metadata):
        return DocOutcome(source=doc.source, status="unchanged", doc_id=doc_id)
    twin = await anyio.to_thread.run_sync(lambda: store.find_by_hash(collection, doc.content_hash))
    if twin is not None and twin.doc_id != doc_id:
        if existing is not None:  # its content now equals another document: keep one copy
            await anyio.to_thread.run_sync(lambda: store.delete_doc(collection, doc_id))
        return DocOutcome(
            source=doc.source,
            status="duplicate",
            doc_id=twin.doc_id,
            message=f"same text as {twin.source!r} (doc {twin.doc_id}), already stored.",
        )
    return await write_document(
        ctx, collection, doc, embed=embed, tags=tags, metadata=metadata, existing=existing
    )


def _failure(source: str, exc: Exception) -> DocOutcome:
    if isinstance(exc, LocalMCPError):
        message = str(exc)
    else:
        logger.exception("unexpected error ingesting %s", source)
        message = f"unexpected {type(exc).__name__}: {exc} (a localmcp bug; see the server log)"
    return DocOutcome(source=source, status="failed", message=message)


def _result(
    collection: str,
    tally: _Tally,
    started: float,
    embed_model: str | None,
    recovered: int,
    warnings: list[str],
) -> IngestResult:
    c = tally.counts
    return IngestResult(
        collection=collection,
        added=c.get("added", 0),
        updated=c.get("updated", 0),
        unchanged=c.get("unchanged", 0),
        duplicates=c.get("duplicate", 0),
        removed=c.get("removed", 0),
        failed=c.get("failed", 0),
        chunks_written=tally.chunks,
        seconds=round(time.monotonic() - started, 3),
        embed_model=embed_model,
        documents=tally.outcomes,
        documents_truncated=tally.total > len(tally.outcomes),
        recovered=recovered,
        warnings=warnings,
    )


# --- entry points -------------------------------------------------------------------------


async def ingest_paths(
    ctx: IngestContext,
    collection: str,
    paths: Sequence[str | Path],
    *,
    roots: Sequence[Path],
    tags: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest files and folders (recursively) under ``roots`` into ``collection``."""
    started = time.monotonic()
    if not paths:
        raise BadInput("no paths given.", hint="Pass one or more files or folders to ingest.")
    tag_list, meta_dict = check_tags(tags), check_metadata(metadata)
    settings, store = ctx.settings, ctx.store
    max_bytes = int(settings.max_file_mb * MIB)
    tally = _Tally()

    # Resolve every path first: errors are per path, the rest goes on.
    files: dict[str, Path] = {}
    folders: list[Path] = []
    for raw in paths:
        try:
            real = resolve_under_roots(raw, roots)
        except (BadInput, NotFound) as exc:
            tally.add(_failure(str(raw), exc))
            continue
        if real.is_dir():
            folders.append(real)
            found, refused, _skipped = await anyio.to_thread.run_sync(
                lambda r=real: scan_folder(r, settings.include, settings.exclude, roots)
            )
            for where, exc in refused:
                tally.add(_failure(where, exc))
            for path in found:
                try:
                    canonical = resolve_under_roots(path, roots)
                except (BadInput, NotFound) as exc:
                    tally.add(_failure(str(path), exc))
                    continue
                files.setdefault(str(canonical), canonical)
        else:
            files.setdefault(str(real), real)

    # A new knowledge base is created with its first good document, so a batch of bad
    # files leaves nothing behind.
    meta: CollectionMeta | None = None
    embed, warnings, recovered = False, [], 0
    known: dict[str, DocRecord] = {}
    ordered = list(files.values())
    if await anyio.to_thread.run_sync(lambda: store.meta(collection, required=False)):
        meta, embed, warnings = await anyio.to_thread.run_sync(
            lambda: ensure_collection(ctx, collection)
        )
        recovered = await anyio.to_thread.run_sync(lambda: store.recover(collection))
        for folder in folders:
            for outcome in await _remove_deleted_files(store, collection, folder, files):
                tally.add(outcome)
        known = await anyio.to_thread.run_sync(
            lambda: _existing(store, collection, [doc_id_for(str(p)) for p in ordered])
        )

    total = len(ordered)
    if progress is not None:
        await progress(0, total, f"ingesting {total} file(s) into {collection}")
    deadline = started + settings.ingest_timeout
    not_reached = 0
    for done, path in enumerate(ordered, start=1):
        source = str(path)
        outcome: DocOutcome | None = None
        # A document cut off by the deadline is abandoned whole by write_document.
        with anyio.move_on_after(deadline - time.monotonic()):
            try:
                doc = await anyio.to_thread.run_sync(lambda p=path: _load(p, max_bytes))
                if meta is None:
                    meta, embed, warnings = await anyio.to_thread.run_sync(
                        lambda: ensure_collection(ctx, collection)
                    )
                outcome = await _ingest_one(
                    ctx,
                    collection,
                    doc,
                    embed=embed,
                    tags=tag_list,
                    metadata=meta_dict,
                    existing=known.get(doc_id_for(doc.source)),
                )
            except Exception as exc:
                outcome = _failure(source, exc)
        if outcome is None:
            not_reached = total - done + 1
            warnings.append(_time_limit_note(settings.ingest_timeout, not_reached, source))
            break
        tally.add(outcome)
        if progress is not None:
            await progress(done, total, f"{outcome.status}: {path.name}")
    embed_model = meta.embed_model if meta is not None and embed else None
    result = _result(collection, tally, started, embed_model, recovered, warnings)
    result.not_reached = not_reached
    return result


async def _remove_deleted_files(
    store: Store, collection: str, folder: Path, files: dict[str, Path]
) -> list[DocOutcome]:
    """Delete the documents of files that were under ``folder`` and are gone now."""
    prefix = str(folder).rstrip(os.sep) + os.sep
    stale = await anyio.to_thread.run_sync(
        lambda: [
            d
            for d in store.iter_docs(collection, prefix)
            if d.source not in files and not os.path.exists(d.source)
        ]
    )
    outcomes = []
    for record in stale:
        chunks = await anyio.to_thread.run_sync(
            lambda r=record: store.delete_doc(collection, r.doc_id)
        )
        logger.info("removed %s (file deleted, %d chunks)", record.source, chunks)
        outcomes.append(
            DocOutcome(
                source=record.source,
                status="removed",
                doc_id=record.doc_id,
                message="file no longer exists",
            )
        )
    return outcomes


def _time_limit_note(limit: float, not_reached: int, at: str) -> str:
    return (
        f"stopped at the ingest time limit of {limit:g} s (kb.ingest_timeout): {not_reached} "
        f"file(s) not ingested, starting at {at!r}; nothing of it was stored half. Run the "
        "same ingest again to continue (finished files are skipped as unchanged), or raise "
        "kb.ingest_timeout (LOCALMCP_KB__INGEST_TIMEOUT)."
    )


def _existing(store: Store, collection: str, doc_ids: list[str]) -> dict[str, DocRecord]:
    found: dict[str, DocRecord] = {}
    for first in range(0, len(doc_ids), 512):
        found.update(store.get_docs(collection, doc_ids[first : first + 512]))
    return found


def _load(path: Path, max_bytes: int) -> Document:
    from localmcp.shared.documents import load_document

    size = path.stat().st_size
    if size > max_bytes:  # refuse before opening: the file may be huge or sparse
        raise size_limit_error(str(path), size, max_bytes)
    return load_document(path, max_bytes=max_bytes)


async def ingest_text(
    ctx: IngestContext,
    collection: str,
    text: str,
    *,
    source: str | None = None,
    title: str | None = None,
    format: str = "markdown",
    tags: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest raw text as one document labelled ``source`` (default: a hash of the text)."""
    from localmcp.shared.textio import content_hash

    started = time.monotonic()
    tag_list, meta_dict = check_tags(tags), check_metadata(metadata)
    max_bytes = int(ctx.settings.max_file_mb * MIB)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise size_limit_error("the text", size, max_bytes)
    if source is not None:
        source = source.strip()
        if not source:
            raise BadInput("source is empty.", hint="Give a label or URL, or omit source.")
        if len(source.encode("utf-8")) > MAX_SOURCE_BYTES:
            raise BadInput(f"source is longer than {MAX_SOURCE_BYTES} bytes.")
    label = source or f"text:{content_hash(text)[:16]}"
    doc = document_from_text(text, source=label, title=title, format=format)  # type: ignore[arg-type]

    store = ctx.store
    meta, embed, warnings = await anyio.to_thread.run_sync(
        lambda: ensure_collection(ctx, collection)
    )
    recovered = await anyio.to_thread.run_sync(lambda: store.recover(collection))
    existing = (
        await anyio.to_thread.run_sync(lambda: store.get_docs(collection, [doc_id_for(label)]))
    ).get(doc_id_for(label))
    if progress is not None:
        await progress(0, 1, f"ingesting {label}")
    tally = _Tally()
    outcome = await _ingest_one(
        ctx, collection, doc, embed=embed, tags=tag_list, metadata=meta_dict, existing=existing
    )
    tally.add(outcome)
    if progress is not None:
        await progress(1, 1, f"{outcome.status}: {label}")
    return _result(
        collection, tally, started, meta.embed_model if embed else None, recovered, warnings
    )

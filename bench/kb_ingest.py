"""Ingest rate of the kb core (keyword-only) against raw pymilvus inserts of the same chunks.

Two corpora: the real Debian FAQ (the English and Chinese HTML chapters) and a synthetic one
(``--synthetic N`` generated Markdown files mixing Chinese and English, default 2,000). For
each, into a fresh Milvus Lite file:

  kb    ``KnowledgeBase.ingest_paths`` (read, decode, convert, chunk, manifest protocol, insert);
  raw   the very rows the kb wrote, read back, inserted with ``MilvusClient.insert`` in the kb's
        batch size into a second collection made by the kb store's ``create_collection`` (same
        schema and BM25 analyzer) -- the baseline;
  parse ``load_document`` + ``chunk_document`` alone on the same files, no Milvus (where the
        kb's time goes besides inserting).

Prints documents/s and chunks/s for each and the ratio kb time / raw time.

Run: ``python bench/kb_ingest.py [--synthetic 2000]``; ``--quick`` uses 300 synthetic files.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kb_common import SyntheticText, bench_settings, faq_files, quiet_logging

from localmcp.servers.kb.ingest import INSERT_ROWS
from localmcp.servers.kb.service import KnowledgeBase
from localmcp.shared.documents import chunk_document, load_document

STORE_METHODS = (
    "meta",
    "recover",
    "get_docs",
    "find_by_hash",
    "iter_docs",
    "begin_doc",
    "insert_chunks",
    "commit_doc",
    "abandon_doc",
)
MILVUS_METHODS = ("insert", "upsert", "delete", "query", "query_iterator", "search")
KB_NAME = "ingest_kb"
RAW_NAME = "ingest_raw"


def write_synthetic(folder: Path, count: int) -> list[Path]:
    """``count`` Markdown files of mixed Chinese / English text under ``folder``."""
    text = SyntheticText(seed=count)
    paths = []
    for i in range(count):
        sub = folder / f"part{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"note-{i:05d}.md"
        path.write_text(text.markdown_file(), "utf-8")
        paths.append(path)
    return paths


def read_rows(client: Any, name: str) -> list[dict[str, Any]]:
    """Every chunk row of ``name`` with the fields an insert takes (the BM25 vector is
    computed by Milvus, so it is left out)."""
    info = client.describe_collection(name)
    fields = [f["name"] for f in info["fields"] if f["name"] != "sparse"]
    iterator = client.query_iterator(name, batch_size=1000, filter='id != ""', output_fields=fields)
    rows: list[dict[str, Any]] = []
    try:
        while batch := iterator.next():
            rows.extend(batch)
    finally:
        iterator.close()
    return rows


def time_calls(target: Any, methods: Sequence[str]) -> dict[str, tuple[int, float]]:
    """Wrap ``methods`` of the object ``target`` with timers (count, seconds); a call made from
    inside another wrapped call is counted only in the outermost one."""
    timers: dict[str, tuple[int, float]] = {}
    depth = [0]
    for method in methods:
        original = getattr(target, method)

        def timed(*args: Any, _name: str = method, _fn: Any = original, **kwargs: Any) -> Any:
            depth[0] += 1
            began = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    count, seconds = timers.get(_name, (0, 0.0))
                    timers[_name] = (count + 1, seconds + time.perf_counter() - began)

        setattr(target, method, timed)
    return timers


def print_calls(title: str, calls: dict[str, tuple[int, float]], total: float, docs: int) -> None:
    """Count, seconds and ms per document of each timed call, then the time outside them."""
    print(f"  {title} (count, seconds, ms per document):")
    for method, (count, seconds) in sorted(calls.items(), key=lambda kv: -kv[1][1]):
        print(f"    {method:<28} {count:6d} {seconds:8.2f} {seconds / docs * 1000:8.2f}")
    outside = total - sum(seconds for _, seconds in calls.values())
    print(f"    {'(outside these)':<28} {'':6} {outside:8.2f} {outside / docs * 1000:8.2f}")


def parse_only(paths: list[Path], size: int, overlap: int) -> tuple[float, int]:
    """Seconds to load and chunk every file (no Milvus) and the chunk count."""
    began = time.perf_counter()
    chunks = 0
    for path in paths:
        doc = load_document(path, max_bytes=50 * 1024 * 1024)
        chunks += len(chunk_document(doc, size=size, overlap=overlap))
    return time.perf_counter() - began, chunks


async def bench_corpus(
    label: str, tmp: Path, roots: list[Path], paths: list[Path], targets: list[Path]
) -> None:
    """Ingest ``targets`` (files or folders holding ``paths``) through the kb, then the same
    rows raw; print the rates."""
    settings = bench_settings(tmp, collection=KB_NAME, roots=roots, db_name="ingest.db")
    kb = KnowledgeBase.open(settings)  # no embedding model: keyword-only
    timers = time_calls(kb.store, STORE_METHODS)
    milvus = time_calls(kb.store.client, MILVUS_METHODS)
    try:
        # Created before timing, as the baseline's collection is: the rate is of ingesting.
        kb.store.create_collection(KB_NAME, embed_model=None, dim=None)
        timers.clear()
        milvus.clear()
        began = time.perf_counter()
        result = await kb.ingest_paths(targets)
        kb_s = time.perf_counter() - began
        if result.failed:
            bad = [d for d in result.documents if d.status == "failed"][:3]
            sys.exit(f"{label}: {result.failed} file(s) failed to ingest, e.g. {bad}")
        docs, chunks = result.added, result.chunks_written

        calls, milvus_calls = dict(timers), dict(milvus)
        client = kb.store.client
        rows = read_rows(client, KB_NAME)
        if len(rows) != chunks:
            sys.exit(f"{label}: the kb reports {chunks} chunks but holds {len(rows)} rows")
        kb.store.create_collection(RAW_NAME, embed_model=None, dim=None)
        began = time.perf_counter()
        for first in range(0, len(rows), INSERT_ROWS):
            client.insert(RAW_NAME, rows[first : first + INSERT_ROWS])
        raw_s = time.perf_counter() - began
    finally:
        kb.close()
    parse_s, parse_chunks = parse_only(paths, settings.kb.chunk_size, settings.kb.chunk_overlap)

    chars = sum(len(r["text"]) for r in rows)
    print(f"\n{label}: {docs:,} documents, {chunks:,} chunks, {chars / 1e6:.2f} M characters")
    print(f"  {'path':<44} {'seconds':>8} {'docs/s':>9} {'chunks/s':>9} {'x raw':>6}")
    for name, seconds, n_chunks in (
        ("kb core ingest_paths (keyword-only)", kb_s, chunks),
        (f"raw MilvusClient.insert, {INSERT_ROWS}-row batches", raw_s, chunks),
        ("load + chunk only (no Milvus)", parse_s, parse_chunks),
    ):
        print(
            f"  {name:<44} {seconds:8.2f} {docs / seconds:9.1f} {n_chunks / seconds:9.1f} "
            f"{seconds / raw_s:6.2f}"
        )
    print_calls(f"where the kb's {kb_s:.2f} s went, by store method", calls, kb_s, docs)
    print_calls("the same, by Milvus client call", milvus_calls, kb_s, docs)


def main() -> int:
    """Parse arguments and run both corpora."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=2000, help="synthetic Markdown files")
    parser.add_argument("--quick", action="store_true", help="300 synthetic files")
    args = parser.parse_args()
    count = 300 if args.quick else args.synthetic
    quiet_logging()

    faq = [*faq_files("en"), *faq_files("zh-cn")]
    print(f"kb ingest rate, Milvus Lite (native) in-process; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="kb-ingest-bench-") as tmp:
        roots = sorted({p.parent for p in faq})
        asyncio.run(
            bench_corpus("Debian FAQ (en + zh-cn HTML)", Path(tmp) / "faq", roots, faq, faq)
        )
        folder = Path(tmp) / "synthetic"
        paths = write_synthetic(folder, count)
        asyncio.run(
            bench_corpus(
                f"synthetic Markdown ({count:,} files, zh + en)",
                Path(tmp) / "syn",
                [folder],
                paths,
                [folder],
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

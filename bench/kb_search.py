"""Search latency of the kb server against raw pymilvus on the same Milvus Lite collection.

For each size (10k and 100k synthetic chunks of mixed Chinese / English text), one knowledge
base collection is created with the kb store's own ``create_collection`` (same schema, BM25
analyzer and indexes) and filled through raw ``MilvusClient.insert`` in batches, with one
manifest row per 10 chunks so every chunk is visible to the kb's search. Then the same queries
run, interleaved, through:

  (a) raw ``MilvusClient.search`` (BM25, same limit and output fields as the kb) in-process,
      its hits read (id, score, fields) as any caller must: pymilvus decodes them lazily;
  (b) the kb core search function (``localmcp.servers.kb.search.search``) in-process;
  (c) ``kb_search`` in keyword mode through an in-memory MCP client session on the server
      ``build_server`` builds;

and, when ``--dim`` is not 0, hybrid search (BM25 + dense, RRF) through (a) ``hybrid_search``
and (b) the core search with ``mode="hybrid"`` (random vectors; the query vectors are computed
before timing, so neither side pays for embedding).

Prints p50 / p95 per path and the ratios (b)/(a), (c)/(a). Targets: (b) <= 1.2x (a);
(c) keyword p95 <= 10 ms at 100k chunks.

Run: ``python bench/kb_search.py`` (10k and 100k) or ``--quick`` (10k only); ``--profile``
adds a cProfile of the (b) and (c) keyword paths at the largest size.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from kb_common import SyntheticText, bench_settings, percentile, quiet_logging

from localmcp.servers.kb import search as kb_search_core
from localmcp.servers.kb.embedding import Embedder
from localmcp.servers.kb.server import build_server
from localmcp.servers.kb.service import KnowledgeBase
from localmcp.servers.kb.store import CHUNK_OUTPUT, DOCS_SUFFIX, Store, _manifest_row

TOP_K = 5
CHUNKS_PER_DOC = 10
INSERT_BATCH = 2000
EMBED_MODEL = "bench-random"
TARGET_CORE = 1.2
TARGET_MCP_P95_MS = 10.0

Timed = Callable[[str], Awaitable[Any]]


class RandomVectors:
    """A stand-in embedding backend: a fixed random unit vector per text (no engine)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.known: dict[str, list[float]] = {}

    def vector(self, text: str) -> list[float]:
        """The vector of ``text`` (seeded by its hash, so stable within a run)."""
        if text not in self.known:
            rng = np.random.default_rng(abs(hash(text)) % 2**32)
            v = rng.standard_normal(self.dim, dtype=np.float32)
            self.known[text] = (v / np.linalg.norm(v)).tolist()
        return self.known[text]

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """One vector per text, like ``Backend.embed``."""
        return [self.vector(t) for t in texts]


def fill(store: Store, name: str, n_chunks: int, dim: int | None, text: SyntheticText) -> float:
    """Create ``name`` through the store and insert ``n_chunks`` rows raw; returns seconds."""
    store.create_collection(name, embed_model=EMBED_MODEL if dim else None, dim=dim)
    client = store.client
    rng = np.random.default_rng(11)
    started = time.perf_counter()
    now = time.time()
    for first in range(0, n_chunks, INSERT_BATCH):
        rows = []
        count = min(INSERT_BATCH, n_chunks - first)
        vectors = None
        if dim:
            vectors = rng.standard_normal((count, dim), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for i in range(count):
            index = first + i
            doc = index // CHUNKS_PER_DOC
            body = text.paragraph(text.rng.randint(2, 6))
            heading = [f"Doc {doc}", text.heading()]
            row: dict[str, Any] = {
                "id": f"d{doc:08d}.g0.{index % CHUNKS_PER_DOC}",
                "doc_id": f"d{doc:08d}",
                "gen": "g0",
                "source": f"/bench/synthetic/{doc:08d}.md",
                "title": f"Doc {doc}",
                "heading_path": heading,
                "position": index % CHUNKS_PER_DOC,
                "start": 0,
                "text": body,
                "search_text": " > ".join(heading) + "\n\n" + body,
                "content_hash": f"{doc:064x}",
                "modified_at": now,
                "tags": [],
                "metadata": {},
            }
            if vectors is not None:
                row["dense"] = vectors[i]
            rows.append(row)
        client.insert(name, rows)
    docs = [
        _manifest_row(
            key=f"d:d{doc:08d}",
            kind="doc",
            doc_id=f"d{doc:08d}",
            gen="g0",
            source=f"/bench/synthetic/{doc:08d}.md",
            title=f"Doc {doc}",
            format="markdown",
            chunk_count=CHUNKS_PER_DOC,
            modified_at=now,
        )
        for doc in range((n_chunks + CHUNKS_PER_DOC - 1) // CHUNKS_PER_DOC)
    ]
    for first in range(0, len(docs), INSERT_BATCH):
        client.insert(name + DOCS_SUFFIX, docs[first : first + INSERT_BATCH])
    return time.perf_counter() - started


async def measure(
    paths: dict[str, Timed], queries: list[str], warmup: int
) -> dict[str, list[float]]:
    """Milliseconds per call of each path, the paths interleaved per query (order rotated)."""
    names = list(paths)
    for q in queries[:warmup]:
        for name in names:
            await paths[name](q)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i, q in enumerate(queries[warmup:]):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            began = time.perf_counter()
            await paths[name](q)
            times[name].append((time.perf_counter() - began) * 1000)
    return times


def row(label: str, ms: list[float], base: list[float] | None) -> str:
    """One printed line: p50, p95 and the ratios to the baseline."""
    p50, p95 = percentile(ms, 50), percentile(ms, 95)
    if base is None:
        ratio = "   1.00     1.00"
    else:
        ratio = f"{p50 / percentile(base, 50):7.2f}  {p95 / percentile(base, 95):7.2f}"
    return f"  {label:<52} {p50:8.2f} {p95:8.2f}  {ratio}"


def read_hits(result: Any) -> list[tuple[Any, float, dict[str, Any]]]:
    """The hits of a raw search as a caller uses them: id, score and the output fields."""
    return [(h["id"], h["distance"], dict(h["entity"])) for h in result[0]]


async def bench_size(
    tmp: Path, n_chunks: int, dim: int, n_queries: int, profile: bool
) -> dict[str, list[float]]:
    """Fill one collection of ``n_chunks`` and time every path on it."""
    name = f"bench{n_chunks}"
    settings = bench_settings(tmp / name, collection=name, db_name=f"{name}.db")
    text = SyntheticText(seed=n_chunks)
    store = Store.open(settings.kb, settings.data_dir)
    try:
        seconds = fill(store, name, n_chunks, dim or None, text)
    finally:
        store.close()
    print(
        f"\n{n_chunks:,} chunks ({n_chunks // CHUNKS_PER_DOC:,} documents), dense dim "
        f"{dim or 'none'}: inserted raw in {seconds:.1f} s ({n_chunks / seconds:,.0f} rows/s)"
    )
    # Reopened as a server would find it: released collections, manifest not yet read.
    kb = KnowledgeBase.open(settings)  # keyword-only: no embedding model configured
    try:
        client = kb.store.client
        queries = [text.query() for _ in range(n_queries)]
        warmup = min(20, n_queries // 5)
        began = time.perf_counter()
        await kb_search_core.search(kb.store, settings.kb, None, queries[0], mode="keyword")
        print(
            f"  first kb search after opening (load + manifest read): "
            f"{(time.perf_counter() - began) * 1000:.0f} ms"
        )

        async def raw_keyword(q: str) -> Any:
            return read_hits(
                client.search(
                    name,
                    data=[q],
                    anns_field="sparse",
                    limit=TOP_K,
                    filter="",
                    output_fields=CHUNK_OUTPUT,
                    search_params={"metric_type": "BM25"},
                )
            )

        async def core_keyword(q: str) -> Any:
            return await kb_search_core.search(
                kb.store, settings.kb, None, q, top_k=TOP_K, mode="keyword"
            )

        server = build_server(settings, kb=kb)
        paths: dict[str, Timed] = {"a": raw_keyword, "b": core_keyword}
        from mcp import Client

        async with Client(server) as session:

            async def mcp_keyword(q: str) -> Any:
                result = await session.call_tool(
                    "kb_search", {"query": q, "mode": "keyword", "top_k": TOP_K}
                )
                if result.is_error:
                    raise RuntimeError(f"kb_search failed: {result.content}")
                return result

            paths["c"] = mcp_keyword
            agree = 0
            for q in queries[:50]:
                raw_ids = [str(hit_id) for hit_id, _, _ in await raw_keyword(q)]
                core = await core_keyword(q)
                agree += raw_ids == [
                    f"{h.doc_id}.g0.{h.position}" for h in core.hits
                ]  # ids as filled
            times = await measure(paths, queries, warmup)
            if profile:
                await profile_async("c", mcp_keyword, queries[:200])
                await profile_async("b", core_keyword, queries[:200])

        print(f"  (a) and (b) return the same top-{TOP_K} ids for {agree}/50 queries")
        if dim:
            vectors = RandomVectors(dim)
            embedder = Embedder(lambda: _ready(vectors), EMBED_MODEL)
            await embedder.start()
            for q in queries:
                await embedder.embed_query(q)  # cached: timing excludes embedding

            async def raw_hybrid(q: str) -> Any:
                from pymilvus import AnnSearchRequest, RRFRanker

                requests = [
                    AnnSearchRequest(
                        data=[q], anns_field="sparse", param={"metric_type": "BM25"}, limit=TOP_K
                    ),
                    AnnSearchRequest(
                        data=[vectors.vector(q)],
                        anns_field="dense",
                        param={"metric_type": "COSINE"},
                        limit=TOP_K,
                    ),
                ]
                return read_hits(
                    client.hybrid_search(
                        name,
                        requests,
                        RRFRanker(settings.kb.rrf_k),
                        limit=TOP_K,
                        output_fields=CHUNK_OUTPUT,
                    )
                )

            async def core_hybrid(q: str) -> Any:
                return await kb_search_core.search(
                    kb.store, settings.kb, embedder, q, top_k=TOP_K, mode="hybrid"
                )

            hybrid = await measure({"ha": raw_hybrid, "hb": core_hybrid}, queries, warmup)
            times.update(hybrid)
    finally:
        kb.close()

    print(
        f"  {'path (' + str(len(times['a'])) + ' queries each)':<52} {'p50 ms':>8} {'p95 ms':>8}"
        f"  {'x(a)p50':>7}  {'x(a)p95':>7}"
    )
    print(row("(a) raw MilvusClient.search, BM25", times["a"], None))
    print(row("(b) kb core search, keyword", times["b"], times["a"]))
    print(row("(c) kb_search via MCP client session, keyword", times["c"], times["a"]))
    if "ha" in times:
        print(row("(a) raw MilvusClient.hybrid_search, BM25+dense RRF", times["ha"], None))
        print(row("(b) kb core search, hybrid", times["hb"], times["ha"]))
    return times


async def _ready(vectors: RandomVectors) -> Any:
    return vectors


async def profile_async(label: str, path: Timed, queries: list[str]) -> None:
    """cProfile ``path`` over ``queries`` and print the functions taking the most time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for q in queries:
        await path(q)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
    stats.print_stats(18)
    print(f"\n--- cProfile of path ({label}), {len(queries)} queries, by own time ---")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:6000])


def main() -> int:
    """Parse arguments, run the sizes, print the verdicts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k chunks only")
    parser.add_argument("--sizes", type=int, nargs="*", help="chunk counts (default 10k 100k)")
    parser.add_argument("--dim", type=int, default=384, help="dense dim for hybrid; 0: none")
    parser.add_argument("--queries", type=int, default=320, help="queries per path")
    parser.add_argument("--profile", action="store_true", help="cProfile (b), (c) at the end")
    args = parser.parse_args()
    sizes = args.sizes or ([10_000] if args.quick else [10_000, 100_000])
    quiet_logging()

    python = sys.version.split()[0]
    print(f"kb search latency, top_k={TOP_K}; Milvus Lite (native) in-process; python {python}")
    results: dict[int, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="kb-search-bench-") as tmp:
        for n in sizes:
            results[n] = asyncio.run(
                bench_size(Path(tmp), n, args.dim, args.queries, args.profile and n == max(sizes))
            )

    print("\ntargets:")
    for n, t in results.items():
        core = percentile(t["b"], 50) / percentile(t["a"], 50)
        core95 = percentile(t["b"], 95) / percentile(t["a"], 95)
        verdict = "met" if max(core, core95) <= TARGET_CORE else "MISSED"
        print(
            f"  {n:>7,} chunks: (b)/(a) keyword = {core:.2f} (p50), {core95:.2f} (p95); "
            f"target <= {TARGET_CORE}: {verdict}"
        )
        if "hb" in t:
            h50 = percentile(t["hb"], 50) / percentile(t["ha"], 50)
            h95 = percentile(t["hb"], 95) / percentile(t["ha"], 95)
            verdict = "met" if max(h50, h95) <= TARGET_CORE else "MISSED"
            print(
                f"  {n:>7,} chunks: (b)/(a) hybrid  = {h50:.2f} (p50), {h95:.2f} (p95); "
                f"target <= {TARGET_CORE}: {verdict}"
            )
    largest = max(results)
    p95 = percentile(results[largest]["c"], 95)
    verdict = "met" if p95 <= TARGET_MCP_P95_MS else "MISSED"
    note = "" if largest >= 100_000 else " (target is stated at 100k; run without --quick)"
    print(
        f"  {largest:>7,} chunks: (c) kb_search keyword p95 = {p95:.2f} ms; target <= "
        f"{TARGET_MCP_P95_MS:.0f} ms: {verdict}{note}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Retrieval quality on the real Debian FAQ (English and Chinese): recall@5, MRR, nDCG@10.

Modes: keyword (BM25 with the mixed jieba analyzer), the same with Milvus's plain
``chinese`` analyzer as a baseline, dense and hybrid (RRF and weighted) with embeddings from
the bundled llama.cpp engine, and reranked when the engine serves /v1/rerank. The knowledge
base is kept in the cache folder, so a second run only re-embeds what changed.

    .venv/bin/python bench/kb_quality.py [--keyword-only] [--data-dir DIR]

Needs ``scripts/fetch-corpora`` (and, for dense modes, the engine: ``localmcp doctor``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from localmcp.servers.kb.search import Filters
from localmcp.servers.kb.service import KnowledgeBase
from localmcp.shared.config import KBSettings, Settings
from localmcp.shared.errors import LocalMCPError, Unsupported

CHINESE_ANALYZER = {"type": "chinese"}
QUERY_SET = Path(__file__).resolve().parent / "data" / "debian_faq_queries.json"
# (question, chapter page stem, section heading)
Query = tuple[str, str, str]


def load_queries() -> dict[str, list[Query]]:
    """The labelled query set per language ("en", "zh")."""
    import json

    data = json.loads(QUERY_SET.read_text("utf-8"))
    out: dict[str, list[Query]] = {"en": [], "zh": []}
    for q in data["queries"]:
        out["en" if q["lang"] == "en" else "zh"].append((q["query"], q["document"], q["section"]))
    return out


def corpora() -> Path:
    """The cache ``scripts/fetch-corpora`` fills."""
    default = Path.home() / ".cache" / "localmcp" / "corpora"
    return Path(os.environ.get("LOCALMCP_CORPORA") or default)


def faq_dirs() -> dict[str, Path]:
    base = corpora()
    en = base / "debian-faq/usr/share/doc/debian/FAQ"
    zh = base / "debian-faq-zh-cn/usr/share/doc/debian/FAQ/zh-cn"
    for path in (en, zh):
        if not path.is_dir():
            sys.exit(f"missing {path}: run scripts/fetch-corpora first")
    return {"en": en, "zh": zh}


def relevant(hit: Any, chapter: str, section: str) -> bool:
    """Hit from the chapter's page and inside the section (the heading is on its path)."""
    return Path(hit.source).name.startswith(f"{chapter}.") and section in hit.heading_path


@dataclass
class Scores:
    recall5: float = 0.0
    mrr: float = 0.0
    ndcg10: float = 0.0
    n: int = 0
    ms: float = 0.0

    def add(self, ranks: list[bool], ideal: int, ms: float) -> None:
        self.n += 1
        self.ms += ms
        self.recall5 += any(ranks[:5])
        first = next((i for i, r in enumerate(ranks) if r), None)
        self.mrr += 0.0 if first is None else 1.0 / (first + 1)
        dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(ranks[:10]) if r)
        idcg = sum(1.0 / math.log2(i + 2) for i in range(min(10, max(ideal, 1))))
        self.ndcg10 += dcg / idcg

    def row(self) -> tuple[float, float, float, float]:
        n = max(self.n, 1)
        return self.recall5 / n, self.mrr / n, self.ndcg10 / n, self.ms / n


def section_sizes(kb: KnowledgeBase, collection: str) -> dict[tuple[str, str], int]:
    """(chapter, section heading) -> chunks inside it, for the ideal DCG."""
    sizes: dict[tuple[str, str], int] = {}
    for record in kb.store.iter_docs(collection):
        chapter = Path(record.source).name.split(".")[0]
        for chunk in kb.store.doc_chunks(collection, record):
            for heading in chunk["heading_path"]:
                sizes[(chapter, heading)] = sizes.get((chapter, heading), 0) + 1
    return sizes


async def ensure(
    kb: KnowledgeBase, name: str, folder: Path, analyzer: dict[str, Any] | None
) -> None:
    """Create ``name`` (optionally with another analyzer) and ingest the FAQ into it."""
    if analyzer is not None and not kb.store.has_collection(name):
        kb.store.create_collection(
            name, embed_model=None, dim=None, analyzer_params=analyzer, analyzer_name="chinese"
        )
    started = time.monotonic()
    result = await kb.ingest_paths([folder], collection=name, roots=[folder])
    print(
        f"  {name}: {result.added + result.updated} written, {result.unchanged} unchanged, "
        f"{result.failed} failed, {result.chunks_written} chunks, "
        f"{time.monotonic() - started:.1f} s",
        flush=True,
    )


async def evaluate(
    kb: KnowledgeBase,
    collection: str,
    queries: list[Query],
    mode: str,
    sizes: dict[tuple[str, str], int],
) -> Scores:
    scores = Scores()
    for question, chapter, section in queries:
        started = time.perf_counter()
        result = await kb.search(
            question, collections=[collection], top_k=10, mode=mode, filters=Filters()
        )
        ms = (time.perf_counter() - started) * 1000
        ranks = [relevant(h, chapter, section) for h in result.hits]
        scores.add(ranks, sizes.get((chapter, section), 1), ms)
    return scores


def settings_for(data_dir: Path, engine: Any | None, **kb: Any) -> Settings:
    backend: dict[str, Any] = {}
    if engine is not None:
        backend = {"kind": "openai", "base_url": engine.base_url, "model": engine.model}
        kb.setdefault("embed_model", engine.model)
        kb.setdefault("embed_batch", 4)
    return Settings(data_dir=data_dir, kb=KBSettings(**kb), backend=backend)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keyword-only", action="store_true", help="skip dense and hybrid")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path.home() / ".cache" / "localmcp" / "bench" / "kb_quality",
    )
    args = parser.parse_args()
    dirs = faq_dirs()
    queries = load_queries()
    rows: list[tuple[str, str, tuple[float, float, float, float]]] = []

    # Keyword: mixed analyzer (the product's) against Milvus's plain "chinese" analyzer.
    kw_dir = args.data_dir / "keyword"
    kb = KnowledgeBase(settings_for(kw_dir, None), _store(kw_dir))
    try:
        print("keyword-only knowledge bases:", flush=True)
        for lang, folder in dirs.items():
            await ensure(kb, f"faq_{lang}", folder, None)
            await ensure(kb, f"faq_{lang}_chinese", folder, CHINESE_ANALYZER)
        for lang in dirs:
            sizes = section_sizes(kb, f"faq_{lang}")
            rows.append(
                (
                    "keyword",
                    lang,
                    (await evaluate(kb, f"faq_{lang}", queries[lang], "keyword", sizes)).row(),
                )
            )
            rows.append(
                (
                    "keyword (chinese analyzer)",
                    lang,
                    (
                        await evaluate(kb, f"faq_{lang}_chinese", queries[lang], "keyword", sizes)
                    ).row(),
                )
            )
    finally:
        await kb.aclose()
        kb.close()

    rerank_note = "not run (keyword only)"
    if not args.keyword_only:
        from localmcp.engine import LlamaEngine, engine_installed

        if not engine_installed():
            sys.exit("the llama.cpp engine is not installed: run `localmcp doctor`")
        async with LlamaEngine() as engine:
            dense_dir = args.data_dir / "dense"
            variants = {
                "dense": ("dense", {}),
                "hybrid rrf": ("hybrid", {"fusion": "rrf"}),
                "hybrid weighted 0.5": ("hybrid", {"fusion": "weighted", "dense_weight": 0.5}),
            }
            kb = KnowledgeBase(settings_for(dense_dir, engine), _store(dense_dir))
            try:
                print(f"embedded knowledge bases ({engine.model}):", flush=True)
                for lang, folder in dirs.items():
                    await ensure(kb, f"faq_{lang}", folder, None)
                for lang in dirs:
                    sizes = section_sizes(kb, f"faq_{lang}")
                    for label, (mode, extra) in variants.items():
                        for key, value in extra.items():
                            setattr(kb.settings.kb, key, value)
                        scores = await evaluate(kb, f"faq_{lang}", queries[lang], mode, sizes)
                        rows.append((label, lang, scores.row()))
                backend = await kb.backend()
                try:
                    await backend.rerank(engine.model, "probe", ["probe"])
                    rerank_note = "available but no rerank model is bundled; not measured"
                except Unsupported as exc:
                    rerank_note = f"not measured: {exc.message}"
                except LocalMCPError as exc:
                    rerank_note = f"not measured: {exc}"
            finally:
                await kb.aclose()
                kb.close()

    print()
    print(f"{'mode':28} {'lang':4} {'recall@5':>9} {'MRR':>7} {'nDCG@10':>8} {'ms/query':>9}")
    base = {lang: row for label, lang, row in rows if label == "keyword"}
    for label, lang, (r5, mrr, ndcg, ms) in rows:
        b = base[lang]
        ratio = f"  (x{ndcg / b[2]:.2f} nDCG vs keyword)" if label != "keyword" and b[2] else ""
        print(f"{label:28} {lang:4} {r5:9.3f} {mrr:7.3f} {ndcg:8.3f} {ms:9.1f}{ratio}")
    print(
        f"\nqueries: {len(queries['en'])} English, {len(queries['zh'])} Chinese "
        f"({QUERY_SET.name}); rerank: {rerank_note}"
    )


def _store(data_dir: Path) -> Any:
    from localmcp.servers.kb.store import Store

    return Store.open(KBSettings(), data_dir)


if __name__ == "__main__":
    anyio.run(main)

"""Answer a question from the knowledge base: retrieve, then let the backend's chat model
answer from numbered sources, citing them as [n].

When retrieval finds nothing relevant the model is not asked at all and the result says so:
a keyword (BM25) match counts as relevant, a dense match only when its cosine similarity
reaches kb.ask_min_similarity (dense search always returns *something*).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence

import anyio

from localmcp.shared.backends import Backend, ChatMessage, GenerationOptions, collect
from localmcp.shared.config import Settings
from localmcp.shared.errors import BackendError

from .embedding import Embedder
from .models import AskResult, AskSource, Progress, SearchHit, SearchMode, SearchResult
from .search import Filters, check_query, search
from .store import Store

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = """\
You answer questions using only the numbered sources you are given.
Cite the sources you use with their numbers in square brackets, like [1] or [2][3], right \
after the sentence they support. If the sources do not contain the answer, say that the \
knowledge base does not say, and do not guess. Answer in the language of the question."""

_CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")


def not_found_answer(collections: Sequence[str]) -> str:
    """What kb_ask says when retrieval found nothing relevant."""
    names = ", ".join(repr(c) for c in collections)
    return (
        f"Nothing relevant to this question was found in the knowledge base {names}, so there "
        "is no answer to give from it."
    )


def citations(answer: str, count: int) -> list[int]:
    """Source numbers cited in ``answer`` that exist (1..count), in order of first use."""
    found: list[int] = []
    for match in _CITATION.finditer(answer):
        for part in re.split(r"[,;]", match.group(1)):
            n = int(part.strip())
            if 1 <= n <= count and n not in found:
                found.append(n)
    return found


def build_prompt(question: str, hits: list[SearchHit], budget: int) -> tuple[str, int]:
    """The user message with numbered sources within ``budget`` characters; sources used."""
    blocks: list[str] = []
    used = 0
    remaining = budget
    for n, hit in enumerate(hits, start=1):
        where = " > ".join(hit.heading_path) or hit.title
        head = f"[{n}] {where} ({hit.source})\n"
        room = remaining - len(head)
        if room < 200 and blocks:
            break
        body = hit.text if len(hit.text) <= room else hit.text[: max(room, 200)] + " …"
        blocks.append(head + body)
        remaining -= len(head) + len(body)
        used = n
    sources = "\n\n".join(blocks)
    return f"Sources:\n\n{sources}\n\nQuestion: {question}", used


async def _relevant(
    store: Store,
    settings: Settings,
    embedder: Embedder | None,
    result: SearchResult,
    question: str,
    collections: Sequence[str] | None,
    filters: Filters | None,
) -> bool:
    """Does anything retrieved actually relate to the question?"""
    if not result.hits:
        return False
    if result.mode == "keyword":
        return True
    keyword = await search(
        store,
        settings.kb,
        embedder,
        question,
        collections=collections,
        top_k=1,
        mode="keyword",
        filters=filters,
    )
    if keyword.hits:
        return True
    threshold = settings.kb.ask_min_similarity
    if threshold is None:
        return False
    dense = await search(
        store,
        settings.kb,
        embedder,
        question,
        collections=collections,
        top_k=1,
        mode="dense",
        filters=filters,
    )
    return bool(dense.hits) and dense.hits[0].score >= threshold


async def ask(
    store: Store,
    settings: Settings,
    embedder: Embedder | None,
    backend: Callable[[], Awaitable[Backend]],
    question: str,
    *,
    collections: Sequence[str] | None = None,
    top_k: int | None = None,
    mode: SearchMode | None = None,
    filters: Filters | None = None,
    model: str | None = None,
    rerank: Backend | None = None,
    progress: Progress | None = None,
) -> AskResult:
    """Retrieve, then answer from numbered sources with [n] citations, or say nothing fits."""
    text = check_query(question, settings.kb)
    result = await search(
        store,
        settings.kb,
        embedder,
        text,
        collections=collections,
        top_k=top_k or settings.kb.ask_top_k,
        mode=mode,
        filters=filters,
        rerank=rerank,
    )
    relevant = await _relevant(store, settings, embedder, result, text, collections, filters)
    if not relevant:
        logger.info("kb_ask: nothing relevant for %r in %s", text[:80], result.collections)
        return AskResult(
            question=text,
            found=False,
            answer=not_found_answer(result.collections),
            sources=[],
            cited=[],
            model=None,
            mode=result.mode,
            warnings=result.warnings,
        )

    prompt, used = build_prompt(text, result.hits, settings.kb.ask_context_chars)
    hits = result.hits[:used]
    engine = await backend()
    chosen = model or settings.kb.ask_model or settings.backend.model
    if not chosen:
        listed = await engine.list_models()
        if not listed:
            raise BackendError(
                f"the engine at {engine.base_url} lists no models to answer with.",
                hint="Set kb.ask_model or backend.model, or load a model into the engine.",
            )
        chosen = listed[0].name
    if progress is not None:
        await progress(0, None, f"asking {chosen} with {len(hits)} source(s)")
    messages = [
        ChatMessage(role="system", content=SYSTEM_PROMPT),
        ChatMessage(role="user", content=prompt),
    ]
    with anyio.fail_after(settings.backend.generation_timeout):
        reply = await collect(
            chosen,
            engine.chat_stream(chosen, messages, GenerationOptions(temperature=0.1)),
        )
    answer = reply.content.strip()
    cited = citations(answer, len(hits))
    warnings = list(result.warnings)
    if not cited:
        warnings.append("the answer cites none of the sources; check it against them.")
    sources = [
        AskSource(
            n=n,
            collection=h.collection,
            doc_id=h.doc_id,
            source=h.source,
            title=h.title,
            heading_path=h.heading_path,
            uri=h.uri,
            score=h.score,
        )
        for n, h in enumerate(hits, start=1)
    ]
    if progress is not None:
        await progress(1, 1, "answered")
    return AskResult(
        question=text,
        found=True,
        answer=answer,
        sources=sources,
        cited=cited,
        model=chosen,
        mode=result.mode,
        warnings=warnings,
    )

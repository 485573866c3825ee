"""The kb MCP server: knowledge bases on Milvus, searched by keyword, meaning or both."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
from pydantic import Field

from localmcp.shared.config import Settings
from localmcp.shared.errors import BadInput
from localmcp.shared.server import (
    Context,
    MCPServer,
    ProgressReporter,
    ToolAnnotations,
    create_server,
    resource_errors,
    tool_errors,
)

from .models import (
    AskResult,
    CollectionList,
    DeleteResult,
    IngestResult,
    SearchMode,
    SearchResult,
    StatsResult,
)
from .search import Filters
from .service import KEYWORD_ONLY, KnowledgeBase

VERSION = "0.1.0"

INSTRUCTIONS = """\
Knowledge bases of documents (Markdown, text, HTML, PDF) stored in Milvus. kb_list shows the \
knowledge bases; kb_search finds passages (mode 'hybrid' combines keyword and meaning, \
'keyword' is exact BM25 matching and works well for names, commands and Chinese terms, \
'dense' is by meaning); kb_ask answers a question from the passages with [n] citations, and \
says so when nothing relevant is stored. Each document is readable in full as the resource \
kb://{collection}/{doc_id} given in results. Omit `collections` to use the default \
knowledge base; pass ["*"] to search all."""

INGEST_NOTE = (
    " kb_ingest adds files or folders under the allowed roots, or raw text; unchanged files are "
    "skipped and deleted ones removed, so re-running it on a folder syncs it. kb_delete removes "
    "documents."
)
READ_ONLY_NOTE = " This server is read-only: documents can be searched but not added or deleted."

READ = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
WRITE = ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False)
DELETE = ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False)

CollectionsArg = Annotated[
    list[str] | None,
    Field(
        description='Knowledge bases to search, e.g. ["docs"]; omit for the default one; '
        '["*"] searches all of them.'
    ),
]
CollectionArg = Annotated[
    str | None,
    Field(
        description="Knowledge base name (lower-case letters, digits, _); omit for the default one."
    ),
]
ModeArg = Annotated[
    SearchMode | None,
    Field(
        description="'hybrid' (default when embeddings are configured), 'keyword' (BM25, exact "
        "words; the default without embeddings) or 'dense' (by meaning)."
    ),
]
SourceArg = Annotated[
    str | None,
    Field(
        description="Only this source (a path or label as shown in results); end it with '*' "
        "for every source starting so, e.g. '/home/me/notes/*'."
    ),
]
TagsArg = Annotated[
    list[str] | None, Field(description="Only documents with at least one of these tags.")
]
AfterArg = Annotated[
    datetime | None,
    Field(description="Only documents modified at or after this time, e.g. '2024-01-31'."),
]
BeforeArg = Annotated[
    datetime | None,
    Field(description="Only documents modified at or before this time, e.g. '2024-12-31T18:00'."),
]
DocIdArg = Annotated[str | None, Field(description="Only this document (doc_id from results).")]


def _filters(
    source: str | None,
    tags: list[str] | None,
    modified_after: datetime | None,
    modified_before: datetime | None,
    doc_id: str | None = None,
) -> Filters:
    return Filters(
        source=source or None,
        tags=tuple(tags or ()),
        doc_id=doc_id or None,
        modified_after=modified_after,
        modified_before=modified_before,
    )


def build_server(settings: Settings, kb: KnowledgeBase | None = None) -> MCPServer[Any]:
    """The kb server; the store is opened now, so a locked database fails at start-up."""
    owned = kb is None
    knowledge = kb or KnowledgeBase.open(settings)
    read_only = settings.kb.read_only

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            if settings.kb.preload:
                tasks.start_soon(knowledge.warm_up)
            try:
                yield None
            finally:
                tasks.cancel_scope.cancel()
                await knowledge.aclose()

    instructions = INSTRUCTIONS + (READ_ONLY_NOTE if read_only else INGEST_NOTE)
    if knowledge.keyword_only:
        instructions += f" Note: {KEYWORD_ONLY}."
    server = create_server("kb", version=VERSION, instructions=instructions, lifespan=lifespan)
    # The store lives as long as the server object; whoever opened it closes it.
    server.kb = knowledge  # type: ignore[attr-defined]  # for the CLI and tests
    server.kb_owned = owned  # type: ignore[attr-defined]

    @server.tool(annotations=READ)
    @tool_errors
    async def kb_list() -> CollectionList:
        """List the knowledge bases with their document and chunk counts and embedding model."""
        return await knowledge.list_collections()

    @server.tool(annotations=READ)
    @tool_errors
    async def kb_stats(collection: CollectionArg = None) -> StatsResult:
        """Figures for one knowledge base (or all): documents, chunks, formats, tags, model."""
        return await knowledge.stats(collection)

    @server.tool(annotations=READ)
    @tool_errors
    async def kb_search(
        query: Annotated[
            str, Field(description="What to look for: a question or keywords, any language.")
        ],
        collections: CollectionsArg = None,
        top_k: Annotated[int, Field(ge=1, le=100, description="How many passages.")] = 5,
        mode: ModeArg = None,
        source: SourceArg = None,
        tags: TagsArg = None,
        modified_after: AfterArg = None,
        modified_before: BeforeArg = None,
        doc_id: DocIdArg = None,
    ) -> SearchResult:
        """Find passages in the knowledge base(s): text, score, source, headings, position."""
        return await knowledge.search(
            query,
            collections=collections,
            top_k=top_k,
            mode=mode,
            filters=_filters(source, tags, modified_after, modified_before, doc_id),
        )

    @server.tool(annotations=READ)
    @tool_errors
    async def kb_ask(
        ctx: Context,
        question: Annotated[str, Field(description="The question, in any language.")],
        collections: CollectionsArg = None,
        top_k: Annotated[
            int | None, Field(ge=1, le=50, description="Passages to answer from (default 6).")
        ] = None,
        mode: ModeArg = None,
        source: SourceArg = None,
        tags: TagsArg = None,
        modified_after: AfterArg = None,
        modified_before: BeforeArg = None,
        model: Annotated[
            str | None, Field(description="Chat model; omit for kb.ask_model or the default.")
        ] = None,
    ) -> AskResult:
        """Answer a question from the knowledge base, citing passages as [n] with the list of
        sources; says plainly when nothing relevant is stored instead of guessing."""
        return await knowledge.ask(
            question,
            collections=collections,
            top_k=top_k,
            mode=mode,
            filters=_filters(source, tags, modified_after, modified_before),
            model=model,
            progress=ProgressReporter(ctx),
        )

    if not read_only:

        @server.tool(annotations=WRITE)
        @tool_errors
        async def kb_ingest(
            ctx: Context,
            paths: Annotated[
                list[str] | None,
                Field(
                    description="Files or folders to add (folders recursively), under the "
                    "allowed roots; re-ingesting updates changed files and removes deleted ones."
                ),
            ] = None,
            text: Annotated[
                str | None, Field(description="Raw text to add as one document, instead of paths.")
            ] = None,
            source: Annotated[
                str | None,
                Field(
                    description="For text: a label or URL naming it; the same label again "
                    "replaces it. Default: derived from the text."
                ),
            ] = None,
            title: Annotated[str | None, Field(description="For text: its title.")] = None,
            format: Annotated[
                Literal["markdown", "text", "html"], Field(description="For text: its format.")
            ] = "markdown",
            tags: Annotated[
                list[str] | None, Field(description="Tags for the documents, for filtering.")
            ] = None,
            metadata: Annotated[
                dict[str, Any] | None,
                Field(description="Extra JSON fields kept with the documents."),
            ] = None,
            collection: CollectionArg = None,
        ) -> IngestResult:
            """Add documents to a knowledge base (created on first use): files, folders or
            raw text. Reports progress and, per document, what happened."""
            if bool(paths) == (text is not None):
                raise BadInput(
                    "give either paths or text.",
                    hint="paths: files or folders to read; text: raw text to add as a document.",
                )
            progress = ProgressReporter(ctx)
            if text is not None:
                return await knowledge.ingest_text(
                    text,
                    collection=collection,
                    source=source,
                    title=title,
                    format=format,
                    tags=tags,
                    metadata=metadata,
                    progress=progress,
                )
            return await knowledge.ingest_paths(
                paths or [], collection=collection, tags=tags, metadata=metadata, progress=progress
            )

        @server.tool(annotations=DELETE)
        @tool_errors
        async def kb_delete(
            doc_id: Annotated[
                str | None, Field(description="The document to delete (doc_id from results).")
            ] = None,
            source: Annotated[
                str | None,
                Field(
                    description="Or: delete the document with this source; end with '*' to "
                    "delete every document whose source starts so."
                ),
            ] = None,
            collection: CollectionArg = None,
        ) -> DeleteResult:
            """Delete documents from a knowledge base by doc_id or source."""
            return await knowledge.delete(collection=collection, doc_id=doc_id, source=source)

    @server.resource(
        "kb://{collection}/{doc_id}",
        name="kb-document",
        description="A whole document of a knowledge base, as Markdown or text.",
        mime_type="text/markdown",
    )
    @resource_errors
    async def kb_document(collection: str, doc_id: str) -> str:
        """The full text of one document."""
        record, text = await knowledge.read_document(collection, doc_id)
        return f"# {record.title}\n\nSource: {record.source}\n\n{text}"

    @server.resource(
        "kb://collections",
        name="kb-collections",
        description="The knowledge bases with their counts, as JSON.",
        mime_type="application/json",
    )
    @resource_errors
    async def kb_collections() -> str:
        """The knowledge bases, as JSON."""
        listing = await knowledge.list_collections()
        return json.dumps(listing.model_dump(mode="json"), ensure_ascii=False, indent=1)

    return server

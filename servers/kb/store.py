"""Every Milvus call of the knowledge base: collections, the document manifest, chunks, search.

One knowledge base is two Milvus collections: ``NAME`` holds the chunks (text, a BM25 sparse
vector Milvus computes from the headings and text, and a dense vector when an embedding model
is configured);
``NAME__docs`` is the manifest, one row per document. A document becomes visible to search
only when its manifest row names the generation its chunks were written under, so a process
killed while writing leaves no half document behind:

1. a ``pending`` manifest row is written for the document,
2. all its chunks are inserted under a fresh generation,
3. the ``doc`` manifest row is upserted with that generation (the switch),
4. chunks of older generations are deleted, then the pending row.

``recover`` finishes or rolls back whatever a killed process left pending. Search filters hits
on the generation (``_visible``), with the manifest cached in memory and re-read for any
document whose generation it does not know (another process may have written it).

Milvus Lite (the default, one ``.db`` file) lets only one process open a file. A second one
fails fast with ``StoreLocked``, unless ``localmcp kb serve-db`` serves the file over gRPC:
it leaves a note next to the file (``.NAME.server.json``) that other processes find and
connect through. The same code talks to a Milvus server when ``kb.uri`` is set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from localmcp.shared.config import KBSettings
from localmcp.shared.errors import (
    BadInput,
    ConfigError,
    LocalMCPError,
    NotFound,
    StoreError,
    StoreLocked,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1
MARKER = "localmcp_kb"
DOCS_SUFFIX = "__docs"

#: jieba segments Chinese and passes Latin words through; lowercase makes "APT" match "apt";
#: cnalphanumonly drops punctuation tokens; English stop words and stemming let "packages"
#: match "package". Milvus Lite 2.5.1 accepts exactly these parameters (an unknown analyzer
#: option crashes its server), so they are fixed here rather than configurable.
ANALYZER_NAME = "jieba+lowercase+cnalphanumonly+stop_en+stem_en"
ANALYZER_PARAMS: dict[str, Any] = {
    "tokenizer": "jieba",
    "filter": [
        "lowercase",
        "cnalphanumonly",
        {"type": "stop", "stop_words": ["_english_"]},
        {"type": "stemmer", "language": "english"},
    ],
}

# Lower case only: Milvus Lite does not keep 'Notes' and 'notes' apart, and two knowledge
# bases sharing storage under two names corrupt each other.
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
NAME_HINT = (
    "Use 1-63 lower-case ASCII letters, digits and single underscores, starting with a letter "
    "(e.g. 'debian_faq'); Milvus allows nothing else in collection names and Milvus Lite does "
    "not tell 'Notes' from 'notes', so names with capitals, spaces or CJK characters are "
    "refused rather than renamed."
)

# Field sizes in bytes (Milvus VARCHAR lengths count UTF-8 bytes).
MAX_TEXT_BYTES = 65_535
MAX_SOURCE_BYTES = 4096
MAX_TITLE_BYTES = 1024
MAX_TAGS = 32
MAX_TAG_BYTES = 128
MAX_METADATA_BYTES = 16_384
# Milvus caps offset + limit of one query or search.
MAX_WINDOW = 16_384
_MAX_CHAR = "\U0010ffff"
LITE_NAME = re.compile(r"^[a-zA-Z0-9.\-_]{1,36}$")

CHUNK_OUTPUT = [
    "doc_id",
    "gen",
    "source",
    "title",
    "heading_path",
    "position",
    "start",
    "text",
    "tags",
    "metadata",
    "modified_at",
]
DOC_OUTPUT = [
    "kind",
    "doc_id",
    "gen",
    "source",
    "title",
    "format",
    "content_hash",
    "chunk_count",
    "char_count",
    "modified_at",
    "ingested_at",
    "tags",
    "metadata",
    "chunking",
    "embed_model",
]

Fusion = Literal["rrf", "weighted"]


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CollectionMeta:
    """What a knowledge base records about itself in its collection description."""

    name: str
    embed_model: str | None
    dim: int | None
    analyzer: str
    created_at: float
    schema_version: int = SCHEMA_VERSION

    def description(self) -> str:
        """The JSON kept as the Milvus collection description."""
        return json.dumps(
            {
                MARKER: self.schema_version,
                "embed_model": self.embed_model,
                "dim": self.dim,
                "analyzer": self.analyzer,
                "created_at": self.created_at,
            }
        )


@dataclass
class DocRecord:
    """One document of the manifest."""

    doc_id: str
    source: str
    title: str
    format: str
    content_hash: str
    gen: str
    chunk_count: int
    char_count: int
    modified_at: float
    ingested_at: float
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    chunking: str = ""
    embed_model: str = ""


@dataclass
class ChunkHit:
    """One chunk found by a search, with the score of the mode that found it."""

    collection: str
    chunk_id: str
    doc_id: str
    gen: str
    source: str
    title: str
    heading_path: list[str]
    position: int
    start: int
    text: str
    tags: list[str]
    metadata: dict[str, Any]
    modified_at: float
    score: float


@dataclass(frozen=True)
class StoreTarget:
    """Where the store lives: a Milvus Lite file, or a server URI."""

    uri: str
    lite_path: Path | None
    via_shared_server: bool = False

    def describe(self) -> str:
        """For messages and logs."""
        if self.lite_path is None:
            return self.uri
        if self.via_shared_server:
            return f"{self.lite_path} (shared through {self.uri})"
        return str(self.lite_path)


# --- names and expressions ----------------------------------------------------------------


def check_collection_name(name: str) -> str:
    """Return ``name`` if it can be a knowledge base name; ``BadInput`` otherwise."""
    if not isinstance(name, str) or not NAME_RE.match(name) or "__" in name:
        raise BadInput(f"invalid knowledge base name {name!r}.", hint=NAME_HINT, collection=name)
    return name


def quote(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    return json.dumps(value, ensure_ascii=False)


def fit_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def prefix_filter(field_name: str, prefix: str) -> str:
    """An exact string-prefix filter (``like`` would treat ``_`` and ``%`` as wildcards)."""
    upper = quote(prefix + _MAX_CHAR)
    return f"({field_name} >= {quote(prefix)} and {field_name} < {upper})"


def _in_list(field_name: str, values: Iterable[str]) -> str:
    return f"{field_name} in [{', '.join(quote(v) for v in values)}]"


# --- opening ------------------------------------------------------------------------------


def lite_path_for(settings: KBSettings, data_dir: Path) -> Path:
    """The Milvus Lite file the settings point at."""
    path = Path(settings.db_path or (data_dir / "kb.db")).expanduser()
    path = Path(os.path.abspath(path))
    if path.suffix != ".db" or not LITE_NAME.match(path.name):
        raise ConfigError(
            f"kb.db_path {str(path)!r} cannot be a Milvus Lite file.",
            hint="Milvus Lite needs a file name ending in '.db', at most 36 characters of "
            "letters, digits, '.', '-' and '_' (e.g. kb.db).",
        )
    return path


def lock_path_for(db: Path) -> Path:
    """The lock file Milvus Lite holds while a process has ``db`` open."""
    return db.parent / f".{db.name}.lock"


def shared_note_path(db: Path) -> Path:
    """Where ``localmcp kb serve-db`` says on which address it serves ``db``."""
    return db.parent / f".{db.name}.server.json"


def lock_is_held(db: Path) -> bool:
    """True when another process holds the Milvus Lite lock of ``db``.

    Only call this when this process has not opened ``db``: closing the probe's descriptor
    drops every POSIX lock this process holds on the file.
    """
    try:
        import fcntl
    except ImportError:  # Windows: the pure-Python Milvus Lite has no lock file to probe
        return False

    lock = lock_path_for(db)
    if not lock.exists():
        return False
    try:
        with open(lock, "a") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.lockf(handle, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def read_shared_note(db: Path) -> str | None:
    """The address of a live ``serve-db`` for ``db``, or None."""
    note = shared_note_path(db)
    try:
        data = json.loads(note.read_text("utf-8"))
        pid, address = int(data["pid"]), str(data["address"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return address


def locked_error(db: Path) -> StoreLocked:
    """The message for a Milvus Lite file another process has open."""
    return StoreLocked(
        f"the knowledge base file {str(db)!r} is open in another process: Milvus Lite lets "
        f"one process open a file, and that process holds its lock {str(lock_path_for(db))!r}.",
        hint="Stop the other localmcp process using it (e.g. a running `localmcp serve kb`), "
        "use that server's tools instead, or share the file: run `localmcp kb serve-db` in a "
        "terminal and every localmcp process reaches the file through it. Do not delete the "
        "file or its lock: that loses or corrupts data.",
        path=str(db),
    )


class Store:
    """A connection to Milvus and every operation the knowledge base needs (all blocking)."""

    def __init__(self, client: Any, target: StoreTarget) -> None:
        self._client = client
        self.target = target
        self._lock = threading.Lock()
        self._loaded: set[str] = set()
        self._meta: dict[str, CollectionMeta] = {}
        # collection -> doc_id -> live generation
        self._live: dict[str, dict[str, str]] = {}
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: KBSettings, data_dir: Path, *, timeout: float = 30.0) -> Store:
        """Connect to the configured Milvus server, or open (or share) the Milvus Lite file."""
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        if settings.uri:
            token = settings.token.get_secret_value() if settings.token else ""
            target = StoreTarget(uri=settings.uri, lite_path=None)
            try:
                client = MilvusClient(uri=settings.uri, token=token, timeout=timeout)
            except MilvusException as exc:
                raise StoreError(
                    f"cannot connect to Milvus at {settings.uri!r}: {_reason(exc)}.",
                    hint="Check kb.uri and kb.token, and that the Milvus server is running.",
                ) from exc
            logger.info("kb store: Milvus at %s", settings.uri)
            _quiet_pymilvus()
            return cls(client, target)

        db = lite_path_for(settings, data_dir)
        db.parent.mkdir(parents=True, exist_ok=True)
        # Check the lock before Milvus Lite tries: its failed attempt unlinks the lock file
        # of the process that holds it, which would let a third process in.
        if lock_is_held(db):
            shared = read_shared_note(db)
            if shared is not None:
                return cls._connect_shared(db, shared, timeout)
            raise locked_error(db)
        try:
            client = _open_lite(db, timeout)
        except MilvusException as exc:
            raise StoreError(
                f"Milvus Lite could not open {str(db)!r}: {_reason(exc)}.",
                hint="Another process may have opened it at the same moment (then retry), or "
                "the folder is not writable or the disk is full; `localmcp doctor` checks the "
                "Milvus Lite installation.",
                path=str(db),
            ) from exc
        logger.info("kb store: Milvus Lite file %s", db)
        _quiet_pymilvus()
        return cls(client, StoreTarget(uri=str(db), lite_path=db))

    @classmethod
    def _connect_shared(cls, db: Path, address: str, timeout: float) -> Store:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        uri = f"http://{address}"
        try:
            client = MilvusClient(uri=uri, timeout=timeout)
        except MilvusException as exc:
            raise StoreError(
                f"{str(db)!r} is served by `localmcp kb serve-db` at {uri}, which does not "
                f"answer: {_reason(exc)}.",
                hint="Restart `localmcp kb serve-db`, or stop it to open the file directly.",
            ) from exc
        logger.info("kb store: %s shared through %s", db, uri)
        _quiet_pymilvus()
        return cls(client, StoreTarget(uri=uri, lite_path=db, via_shared_server=True))

    def close(self) -> None:
        """Close the connection and, for a Milvus Lite file, stop its server process."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._client.close()
        if self.target.lite_path is not None and not self.target.via_shared_server:
            try:
                from milvus_lite.server_manager import server_manager_instance
            except ImportError:  # the pure-Python build runs in this process: nothing to stop
                pass
            else:
                server_manager_instance.release_server(str(self.target.lite_path))
        logger.info("kb store closed: %s", self.target.describe())

    # -- error translation ------------------------------------------------------------------

    def _call(self, what: str, collection: str | None, fn: Callable[[], T]) -> T:
        """Run one Milvus call; translate its failures into ``StoreError``."""
        from pymilvus.exceptions import MilvusException

        if self._closed:
            raise StoreError("the knowledge base store is closed.", hint="Open it again.")
        try:
            return fn()
        except LocalMCPError:
            raise
        except MilvusException as exc:
            where = f" on {collection!r}" if collection else ""
            raise StoreError(
                f"Milvus {what}{where} failed: {_reason(exc)}.",
                hint="Run `localmcp kb stats` to check the store; the server log has details.",
                collection=collection,
            ) from exc
        except Exception as exc:  # grpc errors from a dead server process
            if type(exc).__module__.startswith("grpc"):
                raise StoreError(
                    f"Milvus {what} failed: the database server at "
                    f"{self.target.describe()} does not answer ({type(exc).__name__}).",
                    hint="Restart the localmcp process; with `localmcp kb serve-db`, restart it.",
                ) from exc
            raise

    # -- collections ------------------------------------------------------------------------

    def list_collections(self) -> list[CollectionMeta]:
        """Knowledge bases in this store (other Milvus collections are left out)."""
        names = self._call("list_collections", None, self._client.list_collections)
        metas = []
        for name in sorted(names):
            if name.endswith(DOCS_SUFFIX) or f"{name}{DOCS_SUFFIX}" not in names:
                continue
            meta = self._read_meta(name)
            if meta is not None:
                self._meta[name] = meta
                metas.append(meta)
        return metas

    def has_collection(self, name: str) -> bool:
        """True when the knowledge base ``name`` exists."""
        return self.meta(name, required=False) is not None

    def meta(self, name: str, *, required: bool = True) -> CollectionMeta | None:
        """What ``name`` records about itself; ``NotFound`` (or None) when it does not exist."""
        check_collection_name(name)
        cached = self._meta.get(name)
        if cached is not None:
            return cached
        exists = self._call(
            "has_collection", name, lambda: self._client.has_collection(name)
        ) and self._call(
            "has_collection", name, lambda: self._client.has_collection(name + DOCS_SUFFIX)
        )
        meta = self._read_meta(name) if exists else None
        if meta is None and required:
            known = ", ".join(m.name for m in self.list_collections()) or "none yet"
            raise NotFound(
                f"knowledge base {name!r} does not exist (known: {known}).",
                hint="Ingest something into it first (kb_ingest / `localmcp kb ingest`), or "
                "use kb_list to see the names.",
                collection=name,
            )
        if meta is not None:
            self._meta[name] = meta
        return meta

    def cached_meta(self, name: str) -> CollectionMeta | None:
        """What ``meta`` returned before for ``name``, without asking Milvus; else None."""
        return self._meta.get(name)

    def _read_meta(self, name: str) -> CollectionMeta | None:
        info = self._call(
            "describe_collection", name, lambda: self._client.describe_collection(name)
        )
        try:
            data = json.loads(info.get("description") or "")
        except ValueError:
            return None
        if not isinstance(data, dict) or MARKER not in data:
            return None
        return CollectionMeta(
            name=name,
            embed_model=data.get("embed_model"),
            dim=data.get("dim"),
            analyzer=str(data.get("analyzer", "")),
            created_at=float(data.get("created_at", 0.0)),
            schema_version=int(data[MARKER]),
        )

    def create_collection(
        self,
        name: str,
        *,
        embed_model: str | None,
        dim: int | None,
        analyzer_params: dict[str, Any] | None = None,
        analyzer_name: str = ANALYZER_NAME,
    ) -> CollectionMeta:
        """Create the chunk collection and the manifest of a new knowledge base."""
        from pymilvus import DataType, Function, FunctionType

        check_collection_name(name)
        if (embed_model is None) != (dim is None):
            raise ValueError("embed_model and dim go together")
        meta = CollectionMeta(
            name=name,
            embed_model=embed_model,
            dim=dim,
            analyzer=analyzer_name,
            created_at=time.time(),
        )
        client = self._client

        schema = client.create_schema(description=meta.description())
        schema.add_field("id", DataType.VARCHAR, max_length=96, is_primary=True)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=32)
        schema.add_field("gen", DataType.VARCHAR, max_length=32)
        schema.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE_BYTES)
        schema.add_field("title", DataType.VARCHAR, max_length=MAX_TITLE_BYTES)
        schema.add_field("heading_path", DataType.JSON)
        schema.add_field("position", DataType.INT64)
        schema.add_field("start", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        # What BM25 indexes: title and headings above the chunk, then its text.
        schema.add_field(
            "search_text",
            DataType.VARCHAR,
            max_length=MAX_TEXT_BYTES,
            enable_analyzer=True,
            analyzer_params=analyzer_params or ANALYZER_PARAMS,
        )
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("modified_at", DataType.DOUBLE)
        schema.add_field(
            "tags",
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_capacity=MAX_TAGS,
            max_length=MAX_TAG_BYTES,
        )
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        if dim is not None:
            schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["search_text"],
                output_field_names=["sparse"],
            )
        )
        index = client.prepare_index_params()
        index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        if dim is not None:
            index.add_index(field_name="dense", index_type="AUTOINDEX", metric_type="COSINE")

        docs = client.create_schema(description=meta.description())
        docs.add_field("key", DataType.VARCHAR, max_length=64, is_primary=True)
        docs.add_field("kind", DataType.VARCHAR, max_length=16)
        docs.add_field("doc_id", DataType.VARCHAR, max_length=32)
        docs.add_field("gen", DataType.VARCHAR, max_length=32)
        docs.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE_BYTES)
        docs.add_field("title", DataType.VARCHAR, max_length=MAX_TITLE_BYTES)
        docs.add_field("format", DataType.VARCHAR, max_length=16)
        docs.add_field("content_hash", DataType.VARCHAR, max_length=64)
        docs.add_field("chunk_count", DataType.INT64)
        docs.add_field("char_count", DataType.INT64)
        docs.add_field("modified_at", DataType.DOUBLE)
        docs.add_field("ingested_at", DataType.DOUBLE)
        docs.add_field(
            "tags",
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_capacity=MAX_TAGS,
            max_length=MAX_TAG_BYTES,
        )
        docs.add_field("metadata", DataType.JSON)
        docs.add_field("chunking", DataType.VARCHAR, max_length=64)
        docs.add_field("embed_model", DataType.VARCHAR, max_length=256)
        # Milvus wants a vector field in every collection; the manifest is never searched.
        docs.add_field("placeholder", DataType.FLOAT_VECTOR, dim=2)
        docs_index = client.prepare_index_params()
        docs_index.add_index(field_name="placeholder", index_type="FLAT", metric_type="L2")

        def create() -> None:
            client.create_collection(
                name + DOCS_SUFFIX,
                schema=docs,
                index_params=docs_index,
                consistency_level="Strong",
            )
            client.create_collection(
                name, schema=schema, index_params=index, consistency_level="Strong"
            )

        self._call("create_collection", name, create)
        with self._lock:
            self._meta[name] = meta
            self._loaded.update({name, name + DOCS_SUFFIX})
            self._live[name] = {}
        logger.info(
            "created knowledge base %s (embedding %s, dim %s)", name, embed_model or "none", dim
        )
        return meta

    def drop_collection(self, name: str) -> None:
        """Delete a knowledge base and everything in it."""
        self.meta(name)

        def drop() -> None:
            self._client.drop_collection(name)
            self._client.drop_collection(name + DOCS_SUFFIX)

        self._call("drop_collection", name, drop)
        with self._lock:
            self._meta.pop(name, None)
            self._live.pop(name, None)
            self._loaded.difference_update({name, name + DOCS_SUFFIX})
        logger.info("dropped knowledge base %s", name)

    def is_loaded(self, name: str) -> bool:
        """True once this store has loaded ``name`` into memory."""
        return name in self._loaded

    def ensure_loaded(self, name: str) -> None:
        """Load both collections of ``name`` into memory (a reopened file starts released)."""
        if name in self._loaded:
            return
        self.meta(name)
        for coll in (name + DOCS_SUFFIX, name):
            self._call("load_collection", name, lambda c=coll: self._client.load_collection(c))
        with self._lock:
            self._loaded.update({name, name + DOCS_SUFFIX})

    # -- manifest ---------------------------------------------------------------------------

    def _docs_query(self, name: str, expr: str, limit: int = MAX_WINDOW) -> list[dict[str, Any]]:
        self.ensure_loaded(name)
        return self._call(
            "query",
            name,
            lambda: self._client.query(
                name + DOCS_SUFFIX, filter=expr, output_fields=DOC_OUTPUT, limit=limit
            ),
        )

    def _iterate(
        self, collection: str, name: str, expr: str, fields: list[str], batch: int = 4096
    ) -> Iterator[dict[str, Any]]:
        """Every row matching ``expr`` (Milvus caps one query at 16,384 rows)."""
        self.ensure_loaded(name)
        iterator = self._call(
            "query_iterator",
            name,
            lambda: self._client.query_iterator(
                collection, batch_size=batch, filter=expr, output_fields=fields
            ),
        )
        try:
            while True:
                rows = self._call("query_iterator", name, iterator.next)
                if not rows:
                    return
                yield from rows
        finally:
            with contextlib.suppress(Exception):
                iterator.close()

    def get_docs(self, name: str, doc_ids: Sequence[str]) -> dict[str, DocRecord]:
        """Manifest records of ``doc_ids`` that exist."""
        if not doc_ids:
            return {}
        keys = [f"d:{d}" for d in doc_ids]
        rows = self._docs_query(name, _in_list("key", keys), limit=len(keys))
        return {r["doc_id"]: _doc_record(r) for r in rows}

    def find_by_hash(self, name: str, content_hash: str) -> DocRecord | None:
        """A document of ``name`` with this content, if any."""
        rows = self._docs_query(
            name, f'kind == "doc" and content_hash == {quote(content_hash)}', limit=1
        )
        return _doc_record(rows[0]) if rows else None

    def find_by_source(self, name: str, source: str) -> DocRecord | None:
        """The document of ``name`` whose source is exactly ``source``."""
        rows = self._docs_query(name, f'kind == "doc" and source == {quote(source)}', limit=1)
        return _doc_record(rows[0]) if rows else None

    def iter_docs(self, name: str, source_prefix: str | None = None) -> Iterator[DocRecord]:
        """Every document of ``name``, optionally only those whose source starts so."""
        expr = 'kind == "doc"'
        if source_prefix is not None:
            expr += " and " + prefix_filter("source", source_prefix)
        for row in self._iterate(name + DOCS_SUFFIX, name, expr, DOC_OUTPUT):
            yield _doc_record(row)

    def count_docs(self, name: str) -> int:
        """Documents in ``name``."""
        self.ensure_loaded(name)
        rows = self._call(
            "query",
            name,
            lambda: self._client.query(
                name + DOCS_SUFFIX, filter='kind == "doc"', output_fields=["count(*)"]
            ),
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def count_chunks(self, name: str, expr: str = "") -> int:
        """Chunk rows in ``name`` (visible or not) matching ``expr``."""
        self.ensure_loaded(name)
        rows = self._call(
            "query",
            name,
            lambda: self._client.query(name, filter=expr, output_fields=["count(*)"]),
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def live_generations(self, name: str) -> dict[str, str]:
        """doc_id -> visible generation, read once and then kept up to date."""
        with self._lock:
            live = self._live.get(name)
        if live is not None:
            return live
        fresh: dict[str, str] = {}
        for row in self._iterate(name + DOCS_SUFFIX, name, 'kind == "doc"', ["doc_id", "gen"]):
            fresh[row["doc_id"]] = row["gen"]
        with self._lock:
            self._live[name] = fresh
        return fresh

    def pending(self, name: str) -> list[tuple[str, str]]:
        """(doc_id, generation) of writes a process began and did not finish."""
        rows = self._docs_query(name, 'kind == "pending"')
        return [(r["doc_id"], r["gen"]) for r in rows]

    # -- writes -----------------------------------------------------------------------------

    def begin_doc(self, name: str, doc_id: str, gen: str, source: str) -> None:
        """Record that chunks of ``doc_id`` are about to be written under ``gen``."""
        row = _manifest_row(
            key=f"p:{doc_id}",
            kind="pending",
            doc_id=doc_id,
            gen=gen,
            source=source,
        )
        self._call("upsert", name, lambda: self._client.upsert(name + DOCS_SUFFIX, [row]))

    def insert_chunks(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Insert chunk rows (invisible until ``commit_doc`` names their generation)."""
        if rows:
            self._call("insert", name, lambda: self._client.insert(name, rows))

    def commit_doc(self, name: str, record: DocRecord) -> None:
        """Make ``record.gen`` the visible generation of the document and drop older chunks."""
        row = _manifest_row(
            key=f"d:{record.doc_id}",
            kind="doc",
            doc_id=record.doc_id,
            gen=record.gen,
            source=record.source,
            title=record.title,
            format=record.format,
            content_hash=record.content_hash,
            chunk_count=record.chunk_count,
            char_count=record.char_count,
            modified_at=record.modified_at,
            ingested_at=record.ingested_at,
            tags=record.tags,
            metadata=record.metadata,
            chunking=record.chunking,
            embed_model=record.embed_model,
        )
        self._call("upsert", name, lambda: self._client.upsert(name + DOCS_SUFFIX, [row]))
        with self._lock:
            live = self._live.get(name)
            if live is not None:
                live[record.doc_id] = record.gen
        self._delete_chunks(
            name, f"doc_id == {quote(record.doc_id)} and gen != {quote(record.gen)}"
        )
        self._delete_manifest(name, f"p:{record.doc_id}")

    def delete_doc(self, name: str, doc_id: str) -> int:
        """Remove a document: invisible at once (manifest row first), then its chunks."""
        self._delete_manifest(name, f"p:{doc_id}", f"d:{doc_id}")
        with self._lock:
            live = self._live.get(name)
            if live is not None:
                live.pop(doc_id, None)
        before = self.count_chunks(name, f"doc_id == {quote(doc_id)}")
        self._delete_chunks(name, f"doc_id == {quote(doc_id)}")
        return before

    def abandon_doc(self, name: str, doc_id: str, gen: str) -> None:
        """Undo a write that failed half-way: its chunks go, the visible version stays."""
        self._delete_chunks(name, f"doc_id == {quote(doc_id)} and gen == {quote(gen)}")
        self._delete_manifest(name, f"p:{doc_id}")

    def recover(self, name: str) -> int:
        """Finish what a killed writer left: drop chunks of unfinished generations."""
        pending = self.pending(name)
        if not pending:
            return 0
        docs = self.get_docs(name, [doc_id for doc_id, _ in pending])
        for doc_id, _gen in pending:
            record = docs.get(doc_id)
            if record is None:
                self._delete_chunks(name, f"doc_id == {quote(doc_id)}")
            else:
                self._delete_chunks(
                    name, f"doc_id == {quote(doc_id)} and gen != {quote(record.gen)}"
                )
            self._delete_manifest(name, f"p:{doc_id}")
        logger.warning(
            "knowledge base %s: cleaned up %d document write(s) left unfinished by an "
            "interrupted ingest",
            name,
            len(pending),
        )
        return len(pending)

    def _delete_chunks(self, name: str, expr: str) -> None:
        self.ensure_loaded(name)
        self._call("delete", name, lambda: self._client.delete(name, filter=expr))

    def _delete_manifest(self, name: str, *keys: str) -> None:
        self._call("delete", name, lambda: self._client.delete(name + DOCS_SUFFIX, ids=list(keys)))

    # -- reads ------------------------------------------------------------------------------

    def doc_chunks(self, name: str, record: DocRecord) -> list[dict[str, Any]]:
        """The visible chunks of one document, in order."""
        expr = f"doc_id == {quote(record.doc_id)} and gen == {quote(record.gen)}"
        rows = list(self._iterate(name, name, expr, ["position", "start", "text", "heading_path"]))
        rows.sort(key=lambda r: r["position"])
        return rows

    def search(
        self,
        name: str,
        *,
        mode: Literal["keyword", "dense", "hybrid"],
        query: str,
        vector: list[float] | None,
        limit: int,
        expr: str,
        fusion: Fusion = "rrf",
        rrf_k: int = 60,
        dense_weight: float = 0.5,
    ) -> list[ChunkHit]:
        """Top ``limit`` visible chunks of ``name`` for one query in one mode."""
        self.ensure_loaded(name)
        live = self.live_generations(name)
        if not live and self.count_chunks(name) == 0:
            # BM25 over a collection that never had a row fails in Milvus (0/0 statistics).
            return []
        want = limit
        for _attempt in range(4):
            raw = self._search_once(
                name, mode, query, vector, want, expr, fusion, rrf_k, dense_weight
            )
            hits = self._visible(name, raw, live)
            if len(hits) >= limit or len(raw) < want or want >= MAX_WINDOW:
                return hits[:limit]
            # Invisible chunks (a write in progress or interrupted) took places: widen.
            want = min(MAX_WINDOW, want * 4 + 16)
        return hits[:limit]

    def _search_once(
        self,
        name: str,
        mode: str,
        query: str,
        vector: list[float] | None,
        limit: int,
        expr: str,
        fusion: Fusion,
        rrf_k: int,
        dense_weight: float,
    ) -> list[dict[str, Any]]:
        client = self._client
        if mode == "keyword":
            result = self._call(
                "search",
                name,
                lambda: client.search(
                    name,
                    data=[query],
                    anns_field="sparse",
                    limit=limit,
                    filter=expr,
                    output_fields=CHUNK_OUTPUT,
                    search_params={"metric_type": "BM25"},
                ),
            )
        elif mode == "dense":
            result = self._call(
                "search",
                name,
                lambda: client.search(
                    name,
                    data=[vector],
                    anns_field="dense",
                    limit=limit,
                    filter=expr,
                    output_fields=CHUNK_OUTPUT,
                    search_params={"metric_type": "COSINE"},
                ),
            )
        else:
            from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

            requests = [
                AnnSearchRequest(
                    data=[query],
                    anns_field="sparse",
                    param={"metric_type": "BM25"},
                    limit=limit,
                    expr=expr or None,
                ),
                AnnSearchRequest(
                    data=[vector],
                    anns_field="dense",
                    param={"metric_type": "COSINE"},
                    limit=limit,
                    expr=expr or None,
                ),
            ]
            ranker = (
                RRFRanker(rrf_k)
                if fusion == "rrf"
                else WeightedRanker(1.0 - dense_weight, dense_weight)
            )
            result = self._call(
                "hybrid_search",
                name,
                lambda: client.hybrid_search(
                    name, requests, ranker, limit=limit, output_fields=CHUNK_OUTPUT
                ),
            )
        return list(result[0]) if result else []

    def _visible(
        self, name: str, raw: list[dict[str, Any]], live: dict[str, str]
    ) -> list[ChunkHit]:
        """Hits whose generation is the one the manifest names; unknown ones are re-read."""
        unknown = {
            h["entity"]["doc_id"]
            for h in raw
            if live.get(h["entity"]["doc_id"]) != h["entity"]["gen"]
        }
        if unknown:
            fresh = self.get_docs(name, sorted(unknown))
            with self._lock:
                for doc_id in unknown:
                    record = fresh.get(doc_id)
                    if record is None:
                        live.pop(doc_id, None)
                    else:
                        live[doc_id] = record.gen
        hits = []
        for h in raw:
            e = h["entity"]
            if live.get(e["doc_id"]) != e["gen"]:
                continue
            hits.append(
                ChunkHit(
                    collection=name,
                    chunk_id=str(h["id"]),
                    doc_id=e["doc_id"],
                    gen=e["gen"],
                    source=e["source"],
                    title=e["title"],
                    heading_path=list(e.get("heading_path") or []),
                    position=int(e["position"]),
                    start=int(e["start"]),
                    text=e["text"],
                    tags=list(e.get("tags") or []),
                    metadata=dict(e.get("metadata") or {}),
                    modified_at=float(e["modified_at"]),
                    score=float(h["distance"]),
                )
            )
        return hits

    # -- raw access for benchmarks -----------------------------------------------------------

    @property
    def client(self) -> Any:
        """The underlying ``MilvusClient`` (benchmarks compare against it)."""
        return self._client


def _quiet_pymilvus() -> None:
    """pymilvus logs every failed call with a traceback (and chatter from iterators); each
    failure reaches the caller as a ``StoreError`` instead, so its log keeps to criticals
    unless this module logs at DEBUG."""
    if not logger.isEnabledFor(logging.DEBUG):
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)


def _open_lite(db: Path, timeout: float) -> Any:
    """A client of the Milvus Lite file ``db``, its server process started on first use.

    Milvus Lite waits half a second for the server it starts, then connects once; a cold
    start on a busy machine can take longer to create the socket. The server keeps running,
    so connecting again reaches it once it is ready.
    """
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    deadline = time.monotonic() + timeout
    while True:
        try:
            return MilvusClient(uri=str(db), timeout=timeout)
        except MilvusException as exc:
            if "Fail connecting to server on unix:" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            logger.debug("Milvus Lite for %s is not ready yet; connecting again", db)
            time.sleep(0.2)


def _reason(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return str(message).strip().rstrip(".") or type(exc).__name__


def _manifest_row(
    *,
    key: str,
    kind: str,
    doc_id: str,
    gen: str,
    source: str,
    title: str = "",
    format: str = "",
    content_hash: str = "",
    chunk_count: int = 0,
    char_count: int = 0,
    modified_at: float = 0.0,
    ingested_at: float | None = None,
    tags: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    chunking: str = "",
    embed_model: str = "",
) -> dict[str, Any]:
    return {
        "key": key,
        "kind": kind,
        "doc_id": doc_id,
        "gen": gen,
        "source": fit_bytes(source, MAX_SOURCE_BYTES),
        "title": fit_bytes(title, MAX_TITLE_BYTES),
        "format": format,
        "content_hash": content_hash,
        "chunk_count": chunk_count,
        "char_count": char_count,
        "modified_at": modified_at,
        "ingested_at": time.time() if ingested_at is None else ingested_at,
        "tags": tags or [],
        "metadata": metadata or {},
        "chunking": chunking,
        "embed_model": fit_bytes(embed_model, 256),
        "placeholder": [0.0, 0.0],
    }


def _doc_record(row: dict[str, Any]) -> DocRecord:
    return DocRecord(
        doc_id=row["doc_id"],
        source=row["source"],
        title=row["title"],
        format=row["format"],
        content_hash=row["content_hash"],
        gen=row["gen"],
        chunk_count=int(row["chunk_count"]),
        char_count=int(row["char_count"]),
        modified_at=float(row["modified_at"]),
        ingested_at=float(row["ingested_at"]),
        tags=list(row.get("tags") or []),
        metadata=dict(row.get("metadata") or {}),
        chunking=row.get("chunking") or "",
        embed_model=row.get("embed_model") or "",
    )

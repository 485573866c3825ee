"""``localmcp kb ...``: ingest, search, ask and manage knowledge bases from the terminal."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from .shared.errors import ConfigError, LocalMCPError, StoreError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .servers.kb.service import KnowledgeBase
    from .shared.config import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

kb_app = typer.Typer(
    name="kb",
    help="Knowledge bases on Milvus: ingest folders, search, ask, list, share the database.",
    no_args_is_help=True,
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (default: per-user path).")
]
CollectionOpt = Annotated[
    str | None,
    typer.Option(
        "--collection", "-k", help="Knowledge base name (default: kb.default_collection)."
    ),
]
CollectionsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--collection", "-k", help="Knowledge base to search; repeat for several, '*' all."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ModeOpt = Annotated[
    str | None, typer.Option("--mode", "-m", help="hybrid, keyword or dense (default: best).")
]


def _fail(exc: LocalMCPError) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _settings(config: Path | None) -> Settings:
    from .shared.config import load_settings
    from .shared.logs import setup_logging

    settings = load_settings(config)
    # The terminal shows results and a progress bar; the log says only what went wrong.
    setup_logging(os.environ.get("LOCALMCP_LOG_LEVEL") or "WARNING")
    return settings


def _run(config: Path | None, job: Callable[[KnowledgeBase], Awaitable[T]]) -> T:
    """Open the knowledge base, run ``job`` on it, close it; errors exit with status 2."""
    import anyio

    from .servers.kb.service import KnowledgeBase

    try:
        settings = _settings(config)
        kb = KnowledgeBase.open(settings)
    except LocalMCPError as exc:
        _fail(exc)
        raise AssertionError from exc  # unreachable: _fail exits

    async def main() -> T:
        try:
            return await job(kb)
        finally:
            await kb.aclose()

    try:
        return anyio.run(main)
    except LocalMCPError as exc:
        _fail(exc)
        raise AssertionError from exc
    finally:
        kb.close()


def _print_json(model: BaseModel) -> None:
    typer.echo(json.dumps(model.model_dump(mode="json"), ensure_ascii=False, indent=2))


def esc(text: object) -> str:
    """``text`` safe to print with Rich markup: paths and messages may hold [brackets]."""
    from rich.markup import escape

    return escape(str(text))


def _console() -> Any:
    from rich.console import Console

    return Console()


@kb_app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (folders recursively).")],
    root: Annotated[
        list[Path] | None,
        typer.Option(
            "--root",
            "-r",
            help="Allowed root; repeatable. Default: kb.allowed_roots, else the given paths.",
        ),
    ] = None,
    collection: CollectionOpt = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Tag; repeatable.")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Add or update documents; unchanged files are skipped and deleted ones removed."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .servers.kb.models import IngestResult

    # Paths typed at the terminal are relative to the working directory.
    paths = [p.expanduser().absolute() for p in paths]
    roots = [r.expanduser().absolute() for r in root or []]
    err = Console(stderr=True)

    async def job(kb: KnowledgeBase) -> IngestResult:
        extra = roots
        if not extra and not kb.settings.kb.allowed_roots:
            # The person at the terminal named these paths; they are the roots.
            extra = [p if p.is_dir() else p.parent for p in paths]
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=as_json or not err.is_terminal,
        ) as bar:
            task = bar.add_task("scanning", total=None)

            async def progress(done: float, total: float | None, message: str | None) -> None:
                bar.update(task, completed=done, total=total, description=message or "")

            return await kb.ingest_paths(
                [str(p) for p in paths],
                collection=collection,
                roots=extra,
                tags=tag,
                progress=progress,
            )

    result = _run(config, job)
    if as_json:
        _print_json(result)
    else:
        _show_ingest(result)
    # Exit 1 when nothing could be read, or the time limit left files for a second run.
    if result.not_reached or (
        result.failed and not (result.added or result.updated or result.unchanged)
    ):
        raise typer.Exit(1)


def _show_ingest(result: Any) -> None:
    console = _console()
    for doc in result.documents:
        if doc.status == "failed":
            console.print(
                f"[red]failed[/red] {esc(doc.source)}: {esc(doc.message)}", highlight=False
            )
        elif doc.status in ("duplicate", "removed"):
            console.print(f"[yellow]{doc.status}[/yellow] {esc(doc.source)}", highlight=False)
        for warning in doc.warnings:
            console.print(
                f"[yellow]warning[/yellow] {esc(doc.source)}: {esc(warning)}", highlight=False
            )
    for warning in result.warnings:
        console.print(f"[yellow]warning[/yellow] {esc(warning)}", highlight=False)
    console.print(
        f"{result.collection}: {result.added} added, {result.updated} updated, "
        f"{result.unchanged} unchanged, {result.duplicates} duplicate, {result.removed} removed, "
        f"{result.failed} failed; {result.chunks_written} chunks in {result.seconds:.1f} s"
        + ("" if result.embed_model else " (keyword only)"),
        highlight=False,
    )


def _filters(source: str | None, tag: list[str] | None) -> Any:
    from .servers.kb.search import Filters

    return Filters(source=source, tags=tuple(tag or ()))


def _mode(mode: str | None) -> Any:
    if mode not in (None, "hybrid", "keyword", "dense"):
        _fail(ConfigError(f"unknown mode {mode!r}.", hint="Use hybrid, keyword or dense."))
    return mode


@kb_app.command()
def search(
    query: Annotated[str, typer.Argument(help="Question or keywords.")],
    collection: CollectionsOpt = None,
    mode: ModeOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-n", help="How many passages.")] = 5,
    source: Annotated[
        str | None, typer.Option(help="Only this source ('*' suffix: prefix).")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Only these tags.")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Search knowledge bases and print the best passages."""
    chosen = _mode(mode)
    result = _run(
        config,
        lambda kb: kb.search(
            query, collections=collection, top_k=top_k, mode=chosen, filters=_filters(source, tag)
        ),
    )
    if as_json:
        _print_json(result)
        return
    console = _console()
    for warning in result.warnings:
        console.print(f"[yellow]warning[/yellow] {esc(warning)}", highlight=False)
    if not result.hits:
        console.print(f"nothing found ({result.mode} search).")
    for hit in result.hits:
        where = " > ".join(hit.heading_path) or hit.title
        console.print(
            f"[bold]{hit.rank}.[/bold] {esc(where)}  [dim]{hit.score:.3f}[/dim]", highlight=False
        )
        console.print(
            f"   [dim]{esc(hit.source)} #{hit.position}  {esc(hit.uri)}[/dim]", highlight=False
        )
        snippet = " ".join(hit.text.split())
        console.print(
            f"   {snippet[:300]}{'…' if len(snippet) > 300 else ''}", highlight=False, markup=False
        )


@kb_app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: CollectionsOpt = None,
    mode: ModeOpt = None,
    top_k: Annotated[int | None, typer.Option("--top-k", "-n", help="Passages to use.")] = None,
    model: Annotated[str | None, typer.Option(help="Chat model.")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Answer a question from the knowledge base with numbered sources."""
    chosen = _mode(mode)
    result = _run(
        config,
        lambda kb: kb.ask(question, collections=collection, top_k=top_k, mode=chosen, model=model),
    )
    if as_json:
        _print_json(result)
        return
    console = _console()
    console.print(result.answer, highlight=False, markup=False)
    if result.sources:
        console.print()
    for src in result.sources:
        where = " > ".join(src.heading_path) or src.title
        console.print(f"[{src.n}] {where} — {src.source}", highlight=False, markup=False)
    for warning in result.warnings:
        console.print(f"[yellow]warning[/yellow] {esc(warning)}", highlight=False)


@kb_app.command("list")
def list_cmd(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """List knowledge bases with document and chunk counts."""
    result = _run(config, lambda kb: kb.list_collections())
    if as_json:
        _print_json(result)
        return
    from rich.table import Table

    table = Table("name", "documents", "chunks", "embedding", title=f"store: {result.store}")
    for c in result.collections:
        table.add_row(
            c.name, str(c.documents), str(c.chunks), f"{c.embed_model} ({c.dim})" if c.dim else "-"
        )
    console = _console()
    console.print(table)
    if result.keyword_only:
        console.print("no embedding model configured: keyword search only.")


@kb_app.command()
def stats(
    collection: Annotated[
        str | None, typer.Argument(help="One knowledge base; default all.")
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Figures for knowledge bases: documents, chunks, formats, tags."""
    result = _run(config, lambda kb: kb.stats(collection))
    if as_json:
        _print_json(result)
        return
    console = _console()
    console.print(f"store: {result.store}", highlight=False, markup=False)
    for c in result.collections:
        formats = ", ".join(f"{k} {v}" for k, v in sorted(c.formats.items())) or "-"
        console.print(
            f"{c.name}: {c.documents} documents, {c.chunks} chunks, {c.characters:,} characters "
            f"({formats}); embedding {c.embed_model or 'none'}",
            highlight=False,
        )
        if c.hidden_chunks:
            console.print(
                f"  {c.hidden_chunks} chunk rows of unfinished writes (next ingest cleans)"
            )
        for warning in c.warnings:
            console.print(f"  [yellow]warning[/yellow] {esc(warning)}", highlight=False)


@kb_app.command()
def delete(
    doc_id: Annotated[str | None, typer.Option("--doc-id", help="Document id.")] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Source path or label ('*' suffix: prefix).")
    ] = None,
    collection: CollectionOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Delete documents by id or source."""
    result = _run(config, lambda kb: kb.delete(collection=collection, doc_id=doc_id, source=source))
    if as_json:
        _print_json(result)
        return
    for doc in result.deleted:
        typer.echo(f"deleted {doc.source} ({doc.chunks} chunks)")


@kb_app.command()
def drop(
    collection: Annotated[str, typer.Argument(help="Knowledge base to delete entirely.")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: delete everything in it.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Delete a whole knowledge base (its documents, chunks and vectors)."""
    if not yes:
        typer.secho(
            f"this deletes knowledge base {collection!r} and everything in it; "
            "run again with --yes to confirm.",
            err=True,
        )
        raise typer.Exit(1)
    _run(config, lambda kb: kb.drop(collection))
    typer.echo(f"dropped {collection}")


@kb_app.command("serve-db")
def serve_db(
    port: Annotated[int, typer.Option(help="Loopback port to serve on (0: a free one).")] = 0,
    config: ConfigOpt = None,
) -> None:
    """Share the Milvus Lite file between processes: serve it on a loopback port until Ctrl-C.

    While it runs, every localmcp process (servers and `localmcp kb` commands) reaches the
    file through it automatically, instead of failing on the file's lock.
    """
    try:
        settings = _settings(config)
        server, note, address = _start_db_server(settings, port)
    except LocalMCPError as exc:
        _fail(exc)
        return
    typer.echo(f"serving {server.db_file} on {address} (pid {os.getpid()}); Ctrl-C to stop.")
    typer.echo("Other localmcp processes on this machine use it automatically.")
    stop = {"now": False}

    def _stop(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["now"] and server.alive():
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        note.unlink(missing_ok=True)
        server.stop()
    if not stop["now"] and not server.alive():
        typer.secho("the Milvus Lite server process exited.", err=True)
        raise typer.Exit(1)
    typer.echo("stopped.")


class _DbServer:
    """A Milvus Lite server on a TCP address that stops when this process dies."""

    def __init__(self, db: Path, address: str) -> None:
        from milvus_lite.server import Server

        class _Server(Server):  # type: ignore[misc]  # untyped library class
            @property
            def args(self) -> list[Any]:
                # Passing the lock file makes the server exit when our lock goes away (this
                # process ending, even by SIGKILL), so it can never outlive us on the file.
                return [
                    self.milvus_bin,
                    self._db_file,
                    self._address,
                    self.log_level,
                    self._lock_path,
                ]

        self.db_file = db
        self._server = _Server(str(db), address=address)

    def start(self) -> bool:
        return bool(self._server.init() and self._server.start())

    def alive(self) -> bool:
        proc = self._server._p
        return proc is not None and proc.poll() is None

    def stop(self) -> None:
        self._server.stop()


def _start_db_server(settings: Settings, port: int) -> tuple[_DbServer, Path, str]:
    import socket

    from .engine import free_port
    from .servers.kb.store import lite_path_for, lock_is_held, locked_error, shared_note_path

    if settings.kb.uri:
        raise ConfigError(
            f"kb.uri is set ({settings.kb.uri}): that Milvus server is already shared.",
            hint="serve-db shares a Milvus Lite file; unset kb.uri to use one.",
        )
    db = lite_path_for(settings.kb, settings.data_dir)
    db.parent.mkdir(parents=True, exist_ok=True)
    if lock_is_held(db):
        raise locked_error(db)
    port = port or free_port()
    address = f"127.0.0.1:{port}"
    server = _DbServer(db, address)
    if not server.start():
        raise StoreError(
            f"Milvus Lite could not serve {str(db)!r} on {address}.",
            hint="Check the port is free and the file is not open elsewhere.",
        )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline or not server.alive():
                server.stop()
                raise StoreError(
                    f"Milvus Lite did not start listening on {address}.",
                    hint="Try another --port.",
                ) from None
            time.sleep(0.1)
    note = shared_note_path(db)
    note.write_text(
        json.dumps({"pid": os.getpid(), "address": address, "db": str(db)}), encoding="utf-8"
    )
    logger.info("serving %s on %s", db, address)
    return server, note, address


if __name__ == "__main__":  # pragma: no cover
    sys.exit(kb_app())

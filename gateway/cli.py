"""The ``localmcp`` command: serve a server, run the demo, set up clients, check the machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .shared.errors import LocalMCPError

app = typer.Typer(
    name="localmcp",
    help="Small MCP servers for one local GPU box.",
    no_args_is_help=True,
    add_completion=True,
)

from .kb_cli import kb_app  # noqa: E402  (the sub-app registers after the root exists)

app.add_typer(kb_app)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (default: per-user path).")
]


@app.callback()
def _root() -> None:
    """Small MCP servers for one local GPU box: inference, kb."""


def _fail(exc: LocalMCPError) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def serve(
    name: Annotated[str, typer.Argument(help="Server to run: inference, kb.")],
    http: Annotated[bool, typer.Option("--http", help="Serve Streamable HTTP, not stdio.")] = False,
    host: Annotated[str | None, typer.Option(help="HTTP bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default 8765).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run one server on stdio (default) or Streamable HTTP."""
    from .serve import serve as run

    try:
        run(name, http=http, host=host, port=port, config=config)
    except LocalMCPError as exc:
        _fail(exc)


@app.command()
def demo(
    question: Annotated[
        str | None, typer.Option("--question", "-q", help="What to ask the model.")
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest answer in tokens.")] = 96,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show server logs.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Run the inference server on a real engine and call each of its tools once.

    With no engine configured, installs and starts the bundled llama.cpp engine first.
    """
    import anyio
    from rich.console import Console

    from .demo import DemoFailed, DemoOptions, run_demo
    from .shared.config import load_settings
    from .shared.logs import setup_logging

    options = DemoOptions(max_tokens=max_tokens, config_path=config, verbose=verbose)
    if question is not None:
        options.question = question
    try:
        settings = load_settings(config)
        setup_logging("INFO" if verbose else "WARNING")
        anyio.run(run_demo, settings, options, Console(highlight=False))
    except DemoFailed as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    except LocalMCPError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        raise typer.Exit(130) from None


@app.command()
def install(
    client: Annotated[str, typer.Argument(help="MCP client: claude, cursor or vscode.")],
    server: Annotated[
        list[str] | None,
        typer.Option("--server", "-s", help="Server to add (repeatable; default: inference)."),
    ] = None,
    config_path: Annotated[
        Path | None,
        typer.Option(
            "--config-path",
            help="Client config file to edit (default: the client's usual place; Cursor and "
            "VS Code use .cursor/mcp.json and .vscode/mcp.json in the current folder).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the merged file; write nothing.")
    ] = False,
) -> None:
    """Add localmcp servers to an MCP client's configuration, keeping its other entries."""
    import json

    from .install import install as do_install

    try:
        result = do_install(
            client, server or ["inference"], config_path=config_path, dry_run=dry_run
        )
    except LocalMCPError as exc:
        _fail(exc)
        return
    if dry_run:
        typer.echo(json.dumps(result.config, indent=2, ensure_ascii=False))
        typer.echo(f"(dry run: {result.path} left unchanged)", err=True)
        return
    for name in result.added:
        typer.echo(f"added {name} to {result.path}")
    for name in result.replaced:
        typer.echo(f"updated {name} in {result.path}")
    for name in result.unchanged:
        typer.echo(f"{name} is already set up in {result.path}")
    if result.backup is not None:
        typer.echo(f"previous file saved as {result.backup}")
    if result.written:
        typer.echo(f"Restart {result.client.title} to load the new servers.")


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Check Python, packages, the Milvus Lite build, the configured engine, GPUs and paths.

    Exits 1 when a check failed (for example a configured engine that does not answer).
    """
    import json

    import anyio
    from rich.console import Console

    from .doctor import collect_report, render, report_json
    from .shared.config import load_settings
    from .shared.logs import setup_logging

    try:
        settings = load_settings(config)
        setup_logging("WARNING")
        sections = anyio.run(collect_report, settings, config)
    except LocalMCPError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(report_json(sections), indent=2, ensure_ascii=False))
    else:
        render(sections, Console(highlight=False))
    if any(check.status == "fail" for section in sections for check in section.checks):
        raise typer.Exit(1)


if __name__ == "__main__":
    app(prog_name="localmcp")

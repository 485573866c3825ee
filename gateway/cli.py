"""The ``localmcp`` command: serve a server, run the demo, set up clients, check the machine."""

from __future__ import annotations

import sys
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
    from .registry import build
    from .shared.config import load_settings
    from .shared.logs import setup_logging
    from .shared.server import run_server

    try:
        settings = load_settings(config)
        setup_logging(settings.log_level)
        if host is not None:
            settings.http.host = host
        if port is not None:
            settings.http.port = port
        server = build(name, settings)
    except LocalMCPError as exc:
        _fail(exc)
        return
    run_server(server, "http" if http else "stdio", http=settings.http)


def main() -> None:
    """Entry point for ``python -m localmcp``."""
    app(prog_name="localmcp")


if __name__ == "__main__":
    sys.exit(main())

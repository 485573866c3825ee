"""``localmcp serve NAME``: build one server from settings and run it.

Kept free of the CLI framework: clients start servers often, and start-up time is theirs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .shared.errors import LocalMCPError


def serve(
    name: str,
    *,
    http: bool = False,
    host: str | None = None,
    port: int | None = None,
    config: Path | None = None,
) -> None:
    """Run server ``name`` on stdio, or Streamable HTTP when ``http``; raises LocalMCPError."""
    from .registry import build
    from .shared.config import load_settings
    from .shared.logs import setup_logging
    from .shared.server import run_server

    settings = load_settings(config)
    setup_logging(settings.log_level)
    if host is not None:
        settings.http.host = host
    if port is not None:
        settings.http.port = port
    server = build(name, settings)
    run_server(server, "http" if http else "stdio", http=settings.http)


def serve_from_argv(argv: Sequence[str]) -> int:
    """Parse ``serve`` arguments without the full CLI and run; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="localmcp serve", description="Run one server on stdio (default) or HTTP."
    )
    parser.add_argument("name", help="server to run: inference, kb")
    parser.add_argument("--http", action="store_true", help="serve Streamable HTTP, not stdio")
    parser.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8765)")
    parser.add_argument("--config", "-c", type=Path, help="TOML config file")
    args = parser.parse_args(list(argv))
    try:
        serve(args.name, http=args.http, host=args.host, port=args.port, config=args.config)
    except LocalMCPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

"""The ``localmcp`` executable: a fast path for ``serve``, the full CLI for the rest."""

from __future__ import annotations

import sys


def main() -> None:
    """Run ``localmcp`` with the process arguments."""
    argv = sys.argv[1:]
    if argv[:1] == ["serve"] and not {"-h", "--help"} & set(argv):
        from .serve import serve_from_argv

        sys.exit(serve_from_argv(argv[1:]))

    from .cli import app

    app(prog_name="localmcp")

"""The servers of the suite: the only module that knows them all."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .shared.config import Settings
from .shared.errors import ConfigError

#: server name -> "module:function" that builds its MCPServer from Settings
SERVERS: dict[str, str] = {
    "inference": "localmcp.servers.inference.server:build_server",
    "kb": "localmcp.servers.kb.server:build_server",
}


def build(name: str, settings: Settings) -> Any:
    """Import and build one server by name."""
    target = SERVERS.get(name)
    if target is None:
        raise ConfigError(
            f"unknown server {name!r}.", hint=f"Choose one of: {', '.join(sorted(SERVERS))}."
        )
    module_name, _, func_name = target.partition(":")
    builder: Callable[[Settings], Any] = getattr(importlib.import_module(module_name), func_name)
    return builder(settings)

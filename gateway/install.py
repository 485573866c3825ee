"""``localmcp install CLIENT``: add localmcp servers to an MCP client's configuration file.

Claude Desktop and Cursor keep servers under ``mcpServers``; VS Code keeps them under
``servers`` with an explicit ``"type": "stdio"``. The entry is merged into the existing file:
the user's other servers and settings stay, the previous file is kept as a backup, and the
command is the absolute path of the ``localmcp`` executable so the client finds it without
relying on its own PATH.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .registry import SERVERS
from .shared.errors import BadInput, ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientKind:
    """How one MCP client stores its server list."""

    name: str
    title: str
    servers_key: str
    needs_type: bool
    #: where the file lives: "project" (relative to the working directory) or "user"
    scope: str
    project_path: str | None = None


CLIENTS: dict[str, ClientKind] = {
    "claude": ClientKind("claude", "Claude Desktop", "mcpServers", False, "user"),
    "cursor": ClientKind("cursor", "Cursor", "mcpServers", False, "project", ".cursor/mcp.json"),
    "vscode": ClientKind("vscode", "VS Code", "servers", True, "project", ".vscode/mcp.json"),
}
ALIASES = {"claude-desktop": "claude", "code": "vscode", "vs-code": "vscode"}


@dataclass
class InstallResult:
    """What ``install`` did (or would do, on a dry run)."""

    client: ClientKind
    path: Path
    config: dict[str, Any]
    added: list[str]
    replaced: list[str]
    backup: Path | None
    written: bool
    unchanged: list[str] = field(default_factory=list)


def client_kind(name: str) -> ClientKind:
    """The client called ``name`` (or one of its aliases)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in CLIENTS:
        raise BadInput(
            f"unknown MCP client {name!r}.",
            hint=f"Choose one of: {', '.join(sorted(CLIENTS))}.",
        )
    return CLIENTS[key]


def entry_name(server: str) -> str:
    """The key a server's entry has in a client's configuration."""
    return f"localmcp-{server}"


def server_entry(
    client: ClientKind, server: str, command: str, extra_args: list[str] | None = None
) -> dict[str, Any]:
    """The configuration entry that makes ``client`` launch ``localmcp serve SERVER`` on stdio."""
    if server not in SERVERS:
        raise BadInput(
            f"unknown server {server!r}.", hint=f"Choose one of: {', '.join(sorted(SERVERS))}."
        )
    entry: dict[str, Any] = {}
    if client.needs_type:
        entry["type"] = "stdio"
    entry["command"] = command
    entry["args"] = ["serve", server, *(extra_args or [])]
    return entry


def client_manifest(client: ClientKind, servers: list[str], command: str = "localmcp") -> dict:
    """A whole configuration file for ``client`` holding only localmcp's ``servers``."""
    return {client.servers_key: {entry_name(s): server_entry(client, s, command) for s in servers}}


def default_config_path(client: ClientKind, cwd: Path | None = None) -> Path:
    """Where ``client`` reads its configuration on this machine (project files under ``cwd``)."""
    if client.scope == "project":
        assert client.project_path is not None
        return (cwd or Path.cwd()) / client.project_path
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "Claude" / _CLAUDE_FILE
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA")
        base = Path(appdata) if appdata else Path.home() / "AppData" / "Roaming"
        return base / "Claude" / _CLAUDE_FILE
    # Linux has no official Claude Desktop; community builds read the XDG config folder.
    from platformdirs import user_config_path

    return user_config_path("Claude", appauthor=False) / _CLAUDE_FILE


_CLAUDE_FILE = "claude_desktop_config.json"


def localmcp_command() -> str:
    """The absolute path of the ``localmcp`` executable that belongs to this interpreter."""
    name = "localmcp.exe" if os.name == "nt" else "localmcp"
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside.absolute())
    found = shutil.which("localmcp")
    if found:
        return str(Path(found).absolute())
    raise ConfigError(
        f"cannot find the localmcp executable next to {sys.executable} or on PATH.",
        hint="Install localmcp (pip install localmcp) into the environment you run this from.",
    )


def _read_config(path: Path, servers_key: str) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(
            f"cannot read {str(path)!r}: {exc}.", hint="Check its permissions."
        ) from exc
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{str(path)!r} is not plain JSON (line {exc.lineno}: {exc.msg}); it may hold "
            "comments or trailing commas, which localmcp will not rewrite.",
            hint="Fix or simplify the file, or add the entry by hand (see --dry-run).",
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{str(path)!r} holds a JSON {type(data).__name__}, not an object.",
            hint="An MCP client configuration file is one JSON object.",
        )
    section = data.get(servers_key)
    if section is not None and not isinstance(section, dict):
        raise ConfigError(
            f"{servers_key!r} in {str(path)!r} is a {type(section).__name__}, not an object.",
            hint=f"Make {servers_key!r} an object mapping names to server entries.",
        )
    return data


def _backup_path(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.{stamp}.bak")
    for n in range(1, 1000):
        if not candidate.exists():
            return candidate
        candidate = path.with_name(f"{path.name}.{stamp}-{n}.bak")
    raise ConfigError(f"too many backups of {str(path)!r}.", hint="Remove old .bak files.")


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install(
    client_name: str,
    servers: list[str],
    *,
    config_path: Path | None = None,
    command: str | None = None,
    dry_run: bool = False,
    cwd: Path | None = None,
) -> InstallResult:
    """Merge entries for ``servers`` into the configuration file of ``client_name``."""
    client = client_kind(client_name)
    if not servers:
        raise BadInput("no server to install.", hint=f"Name one of: {', '.join(SERVERS)}.")
    path = Path(config_path).expanduser() if config_path else default_config_path(client, cwd)
    exe = command or localmcp_command()

    config = _read_config(path, client.servers_key)
    section: dict[str, Any] = dict(config.get(client.servers_key) or {})
    added: list[str] = []
    replaced: list[str] = []
    unchanged: list[str] = []
    for server in servers:
        name = entry_name(server)
        entry = server_entry(client, server, exe)
        if name not in section:
            added.append(name)
        elif section[name] == entry:
            unchanged.append(name)
        else:
            replaced.append(name)
        section[name] = entry
    merged = {**config, client.servers_key: section}

    backup: Path | None = None
    if not (added or replaced):  # the file already says exactly this: leave it be
        return InstallResult(client, path, merged, [], [], None, False, unchanged)
    if not dry_run:
        if path.exists():
            backup = _backup_path(path)
            shutil.copy2(path, backup)
        _write_atomically(path, json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
        logger.info("wrote %s (backup %s)", path, backup)
    return InstallResult(client, path, merged, added, replaced, backup, not dry_run, unchanged)

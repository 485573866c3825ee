"""Every manifest parses, matches the installer, and launches the server it names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import localmcp
from localmcp.install import CLIENTS, client_manifest
from localmcp.registry import SERVERS

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
CLIENT_FILES = {
    "claude": "claude_desktop_config.json",
    "cursor": "cursor.mcp.json",
    "vscode": "vscode.mcp.json",
}
SERVER_DIRS = sorted(p for p in MANIFESTS.iterdir() if p.is_dir())


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_registered_server_has_a_manifest_folder() -> None:
    assert [p.name for p in SERVER_DIRS] == sorted(SERVERS)


@pytest.mark.parametrize("folder", SERVER_DIRS, ids=lambda p: p.name)
@pytest.mark.parametrize("client", sorted(CLIENT_FILES))
def test_client_manifest_parses_and_matches_the_installer(folder: Path, client: str) -> None:
    data = load(folder / CLIENT_FILES[client])
    assert data == client_manifest(CLIENTS[client], [folder.name])
    (entry,) = data[CLIENTS[client].servers_key].values()
    assert entry["command"] == "localmcp"
    assert entry["args"] == ["serve", folder.name]
    if client == "vscode":
        assert entry["type"] == "stdio"


@pytest.mark.parametrize("folder", SERVER_DIRS, ids=lambda p: p.name)
def test_registry_server_json_follows_the_registry_schema(folder: Path) -> None:
    data = load(folder / "server.json")
    assert re.fullmatch(
        r"https://static\.modelcontextprotocol\.io/schemas/\d{4}-\d{2}-\d{2}/server\.schema\.json",
        data["$schema"],
    )
    assert re.fullmatch(r"[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+", data["name"])
    assert data["name"].endswith(f"/{folder.name}")
    assert 1 <= len(data["description"]) <= 100
    assert data["version"] == localmcp.__version__
    (package,) = data["packages"]
    allowed = {
        "registryType",
        "registryBaseUrl",
        "identifier",
        "version",
        "fileSha256",
        "runtimeHint",
        "transport",
        "runtimeArguments",
        "packageArguments",
        "environmentVariables",
    }
    assert set(package) <= allowed
    assert package["registryType"] == "pypi"
    assert package["identifier"] == "localmcp"
    assert package["version"] == localmcp.__version__
    assert package["transport"] == {"type": "stdio"}
    args = [a["value"] for a in package["packageArguments"] if a["type"] == "positional"]
    assert args == ["serve", folder.name]
    for variable in package.get("environmentVariables", []):
        assert variable["name"].startswith("LOCALMCP_")


def launch_targets() -> list[tuple[str, list[str]]]:
    """Each distinct (command, args) the client manifests name."""
    seen: dict[str, tuple[str, list[str]]] = {}
    for folder in SERVER_DIRS:
        for client, name in CLIENT_FILES.items():
            for entry in load(folder / name)[CLIENTS[client].servers_key].values():
                seen[json.dumps([entry["command"], entry["args"]])] = (
                    entry["command"],
                    entry["args"],
                )
    return list(seen.values())


@pytest.mark.parametrize("command,args", launch_targets(), ids=lambda v: str(v))
async def test_manifest_command_launches_and_lists_tools(
    command: str,
    args: list[str],
    localmcp_exe: Path,
    isolated_env: dict[str, str],
    closed_engine_env: dict[str, str],
) -> None:
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    assert command == "localmcp"
    env = {
        **{k: v for k, v in isolated_env.items() if k.startswith(("LOCALMCP_", "XDG_"))},
        **closed_engine_env,
    }
    params = StdioServerParameters(command=str(localmcp_exe), args=args, env=env)
    with anyio.fail_after(120):
        async with Client(params, read_timeout_seconds=60) as client:
            assert client.server_info is not None
            assert client.server_info.name == f"localmcp-{args[1]}"
            tools = (await client.list_tools()).tools
    assert tools
    for tool in tools:
        assert tool.description
        assert tool.output_schema is not None, f"{tool.name} has no output schema"

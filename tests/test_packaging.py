"""The package as installed: the wheel's layout, lazy imports, and logs on stderr only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Modules no server needs before its first tool call.
LAZY_FOR_INFERENCE = [
    "ollama",
    "jsonschema",
    "httpx",
    "typer",
    "pymilvus",
    "milvus_lite",
    "pypdfium2",
    "selectolax",
    "markdown_it",
    "localmcp.servers.kb",
    "localmcp.servers.inference.service",
    "localmcp.shared.backends.ollama",
    "localmcp.shared.backends.openai_compat",
]
LAZY_FOR_KB = [
    "ollama",
    "jsonschema",
    "httpx",
    "typer",
    "pypdfium2",
    "selectolax",
    "markdown_it",
    "markdownify",
    "localmcp.servers.inference",
    "localmcp.shared.backends.ollama",
    "localmcp.shared.backends.openai_compat",
]


@pytest.mark.slow
def test_wheel_maps_shared_and_servers_into_localmcp_and_runs_from_a_plain_install(
    tmp_path: Path,
) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info/ beside the sources.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".cache", "build", "*.egg-info", "__pycache__", "node_modules"
        ),
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("localmcp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in (
        "localmcp/entry.py",
        "localmcp/shared/backends/ollama.py",
        "localmcp/shared/documents/chunker.py",
        "localmcp/servers/inference/fit.py",
        "localmcp/servers/kb/store.py",
    ):
        assert module in names, module
    assert not [n for n in names if n.split("/")[0] in ("shared", "servers", "gateway", "tests")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "localmcp = localmcp.entry:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "-t", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    probe = (
        "import importlib.util, json, localmcp, localmcp.servers.kb.server, "
        "localmcp.servers.inference.server;"
        "print(json.dumps([localmcp.__file__, importlib.util.find_spec('shared') is None, "
        "importlib.util.find_spec('servers') is None]))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,  # not the checkout, so nothing resolves to the source tree
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    location, no_bare_shared, no_bare_servers = json.loads(ran.stdout)
    assert Path(location).is_relative_to(target)
    assert no_bare_shared and no_bare_servers


def _loaded_after_build(server: str, modules: list[str], tmp_path: Path) -> list[str]:
    script = (
        "import json, sys\n"
        "from localmcp.registry import build\n"
        "from localmcp.shared.config import Settings\n"
        f"server = build({server!r}, Settings(data_dir={str(tmp_path)!r}))\n"
        f"print(json.dumps([m for m in {modules!r} if m in sys.modules]))\n"
        "getattr(server, 'kb', None) and server.kb.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALMCP_")}
    ran = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout.splitlines()[0])


@pytest.mark.parametrize(
    ("server", "lazy"), [("inference", LAZY_FOR_INFERENCE), ("kb", LAZY_FOR_KB)]
)
def test_building_a_server_imports_no_engine_client_or_document_parser(
    server: str, lazy: list[str], tmp_path: Path
) -> None:
    assert _loaded_after_build(server, lazy, tmp_path) == []


@pytest.mark.parametrize(
    ("level", "shown", "hidden"),
    [
        ("INFO", ["INFO localmcp.servers.kb.store: kb store: Milvus Lite file"], []),
        ("WARNING", ["WARNING localmcp.servers.kb.service: no embedding model"], [" INFO "]),
        ("ERROR", [], [" INFO ", " WARNING "]),
    ],
)
def test_logs_go_to_stderr_at_the_configured_level(
    localmcp_exe: Path,
    isolated_env: dict[str, str],
    level: str,
    shown: list[str],
    hidden: list[str],
) -> None:
    env = {**isolated_env, "LOCALMCP_LOG_LEVEL": level}
    # No client on stdin: the server starts, logs what it opened, and ends at end of input.
    done = subprocess.run(
        [str(localmcp_exe), "serve", "kb"],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout == ""  # stdout belongs to the protocol
    for text in shown:
        assert text in done.stderr, done.stderr
    for text in hidden:
        assert text not in done.stderr, done.stderr

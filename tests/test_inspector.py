"""The official MCP Inspector CLI as an outside client of ``localmcp serve inference``."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localmcp.engine import LlamaEngine

INFERENCE_TOOLS = {
    "list_models",
    "show_model",
    "loaded_models",
    "pull_model",
    "chat",
    "generate",
    "embed",
    "fit_model",
}


@pytest.fixture(scope="module")
def inspector(skip_or_fail: Callable[[str], None]) -> Path:
    """The ``mcp-inspector`` executable that scripts/test installs."""
    candidates = []
    if os.environ.get("LOCALMCP_INSPECTOR"):
        candidates.append(Path(os.environ["LOCALMCP_INSPECTOR"]))
    npm_dir = os.environ.get("LOCALMCP_NPM_DIR")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "localmcp" / "npm"
    for folder in (Path(npm_dir) if npm_dir else None, cache):
        if folder is not None:
            candidates.append(folder / "node_modules" / ".bin" / "mcp-inspector")
    for path in candidates:
        if path.is_file():
            return path
    skip_or_fail(
        "the MCP Inspector CLI is not installed; ./scripts/test installs it "
        "(npm install --prefix ~/.cache/localmcp/npm @modelcontextprotocol/inspector)"
    )
    raise AssertionError("unreachable")


def run_inspector(
    inspector: Path,
    localmcp_exe: Path,
    env: dict[str, str],
    tmp_path: Path,
    *method_args: str,
    exit_code: int = 0,
) -> dict[str, Any]:
    """``mcp-inspector --cli localmcp serve inference ...`` with JSON output; the result.

    The Inspector exits 5 when a tool call returns ``isError``.
    """
    server_env = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    cmd = [
        str(inspector),
        "--cli",
        str(localmcp_exe),
        "serve",
        "inference",
        *server_env,
        *method_args,
        "--format",
        "json",
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "MCP_CATALOG_PATH": str(tmp_path / "catalog.json")},
    )
    assert done.returncode == exit_code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)["result"]


def test_inspector_lists_the_inference_tools_with_schemas(
    inspector: Path,
    localmcp_exe: Path,
    closed_engine_env: dict[str, str],
    tmp_path: Path,
) -> None:
    result = run_inspector(
        inspector, localmcp_exe, closed_engine_env, tmp_path, "--method", "tools/list"
    )
    tools = {tool["name"]: tool for tool in result["tools"]}
    assert set(tools) >= INFERENCE_TOOLS
    for name in INFERENCE_TOOLS:
        assert tools[name]["description"]
        assert tools[name]["inputSchema"]["type"] == "object"
        assert tools[name]["outputSchema"]["type"] == "object"


def test_inspector_calls_fit_model_with_arguments(
    inspector: Path,
    localmcp_exe: Path,
    closed_engine_env: dict[str, str],
    tmp_path: Path,
) -> None:
    args = {
        "parameters_billions": 32,
        "layers": 64,
        "kv_heads": 8,
        "head_dim": 128,
        "quantization": "Q4_K_M",
        "context": 4096,
        "gpu_memory_gb": 22,
    }
    result = run_inspector(
        inspector,
        localmcp_exe,
        closed_engine_env,
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "fit_model",
        "--tool-args-json",
        json.dumps(args),
    )
    assert result["isError"] is False
    assert result["structuredContent"]["fits"] is True


def test_inspector_calls_list_models_against_the_real_engine(
    inspector: Path,
    localmcp_exe: Path,
    engine_env: dict[str, str],
    llama_engine: LlamaEngine,
    tmp_path: Path,
) -> None:
    result = run_inspector(
        inspector,
        localmcp_exe,
        engine_env,
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "list_models",
    )
    assert result["isError"] is False
    names = [m["name"] for m in result["structuredContent"]["models"]]
    assert llama_engine.model in names


def test_inspector_sees_a_tool_error_when_the_engine_is_down(
    inspector: Path,
    localmcp_exe: Path,
    closed_engine_env: dict[str, str],
    tmp_path: Path,
) -> None:
    result = run_inspector(
        inspector,
        localmcp_exe,
        closed_engine_env,
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "list_models",
        exit_code=5,
    )
    assert result["isError"] is True
    message = result["content"][0]["text"]
    assert closed_engine_env["LOCALMCP_BACKEND__BASE_URL"] in message
    assert "Traceback" not in message

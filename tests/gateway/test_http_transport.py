"""``localmcp serve inference --http`` as a real subprocess: SDK client, Host check, token gate."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from localmcp.engine import free_port

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@contextmanager
def http_server(exe: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """Run the inference server on Streamable HTTP on a free port; yield its MCP URL."""
    port = free_port()
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [str(exe), "serve", "inference", "--http", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"server did not listen within 60 s: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def list_tool_names(url: str, headers: dict[str, str] | None = None) -> list[str]:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    transport = streamable_http_client(url, http_client=create_mcp_http_client(headers=headers))
    async with Client(transport, read_timeout_seconds=60) as client:
        return [tool.name for tool in (await client.list_tools()).tools]


async def test_http_server_lists_tools_to_the_sdk_client(
    localmcp_exe: Path,
    isolated_env: dict[str, str],
    closed_engine_env: dict[str, str],
    tmp_path: Path,
) -> None:
    with http_server(localmcp_exe, {**isolated_env, **closed_engine_env}, tmp_path / "log") as url:
        names = await list_tool_names(url)
    assert {"list_models", "chat", "embed", "fit_model"} <= set(names)


def test_http_server_refuses_a_foreign_host_header(
    localmcp_exe: Path,
    isolated_env: dict[str, str],
    closed_engine_env: dict[str, str],
    tmp_path: Path,
) -> None:
    with http_server(localmcp_exe, {**isolated_env, **closed_engine_env}, tmp_path / "log") as url:
        foreign = httpx.post(
            url, json=INITIALIZE, headers={**MCP_HEADERS, "Host": "evil.example:80"}, timeout=10
        )
        own = httpx.post(url, json=INITIALIZE, headers=MCP_HEADERS, timeout=10)
    assert foreign.status_code == 421
    assert own.status_code == 200


async def test_http_server_with_token_needs_the_bearer_token(
    localmcp_exe: Path,
    isolated_env: dict[str, str],
    closed_engine_env: dict[str, str],
    tmp_path: Path,
) -> None:
    env = {**isolated_env, **closed_engine_env, "LOCALMCP_HTTP__TOKEN": "s3cret-token"}
    with http_server(localmcp_exe, env, tmp_path / "log") as url:
        missing = httpx.post(url, json=INITIALIZE, headers=MCP_HEADERS, timeout=10)
        wrong = httpx.post(
            url,
            json=INITIALIZE,
            headers={**MCP_HEADERS, "Authorization": "Bearer nope"},
            timeout=10,
        )
        names = await list_tool_names(url, {"Authorization": "Bearer s3cret-token"})
    assert missing.status_code == 401
    assert "bearer" in missing.text.lower()
    assert wrong.status_code == 401
    assert "chat" in names


def test_stdio_server_keeps_stdout_for_the_protocol(
    localmcp_exe: Path, isolated_env: dict[str, str], closed_engine_env: dict[str, str]
) -> None:
    """Everything the server writes to stdout must be JSON-RPC: one message per line."""
    import json

    done = subprocess.run(
        [str(localmcp_exe), "serve", "inference"],
        input=json.dumps(INITIALIZE) + "\n",
        capture_output=True,
        text=True,
        env={**isolated_env, **closed_engine_env, "LOCALMCP_LOG_LEVEL": "DEBUG"},
        timeout=60,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines, done.stderr
    for line in lines:
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert json.loads(lines[0])["result"]["serverInfo"]["name"] == "localmcp-inference"

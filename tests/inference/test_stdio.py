"""``python -m localmcp serve inference`` as a real stdio subprocess."""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from mcp import Client, StdioServerParameters
from mcp_types.version import LATEST_HANDSHAKE_VERSION

from localmcp.engine import LlamaEngine

SERVE = ["-m", "localmcp", "serve", "inference"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def no_engine_env(isolated_env: dict[str, str]) -> dict[str, str]:
    return {
        **isolated_env,
        "LOCALMCP_BACKEND__KIND": "openai",
        "LOCALMCP_BACKEND__BASE_URL": f"http://127.0.0.1:{closed_port()}/v1",
        "LOCALMCP_BACKEND__RETRIES": "0",
    }


@pytest.mark.engine
async def test_stdio_server_streams_a_real_answer_with_progress(
    isolated_env: dict[str, str], engine_env: dict[str, str], llama_engine: LlamaEngine
) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=SERVE, env={**isolated_env, **engine_env}
    )
    progress: list[str | None] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    with anyio.fail_after(120):
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"chat", "embed", "fit_model"} <= names
            result = await client.call_tool(
                "chat",
                {"prompt": "Say something about 東京 🗼", "max_tokens": 24},
                progress_callback=on_progress,
            )
            assert not result.is_error, result.content
            answer = result.structured_content
            assert answer is not None and answer["content"].strip()
            assert answer["model"] == llama_engine.model
            assert "".join(m or "" for m in progress) == answer["content"]
            models = await client.call_tool("list_models", {})
            assert models.structured_content is not None
            assert models.structured_content["models"][0]["name"] == llama_engine.model


async def test_stdio_refuses_a_ten_megabyte_prompt_and_keeps_serving(
    isolated_env: dict[str, str],
) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=SERVE, env=no_engine_env(isolated_env)
    )
    with anyio.fail_after(60):
        async with Client(params) as client:
            result = await client.call_tool("chat", {"prompt": "x" * 10_000_000})
            assert result.is_error
            assert "inference.max_prompt_chars" in result.content[0].text  # type: ignore[union-attr]
            result = await client.call_tool("list_models", {})
            assert result.is_error
            assert "cannot connect" in result.content[0].text  # type: ignore[union-attr]


async def _send(proc: Process, payload: bytes) -> None:
    assert proc.stdin is not None
    await proc.stdin.send(payload + b"\n")


async def _read_reply(proc: Process, buffer: bytearray, want_id: int) -> dict[str, Any]:
    """Read stdout lines until the JSON-RPC reply with ``want_id`` arrives."""
    assert proc.stdout is not None
    while True:
        while b"\n" not in buffer:
            chunk = await proc.stdout.receive()
            buffer.extend(chunk)
        line, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        message = json.loads(line)
        if message.get("id") == want_id:
            return message


async def test_raw_invalid_bytes_on_stdin_neither_kill_nor_hang_the_server(
    isolated_env: dict[str, str],
) -> None:
    env = no_engine_env(isolated_env)
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": LATEST_HANDSHAKE_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "0"},
        },
    }
    fit_call = (
        b'{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "fit_model", '
        b'"arguments": {"model": "qwen2.5:7b-\xff\xfe-\xc3", "gpu_memory_gb": 16}}}'
    )
    async with await anyio.open_process([sys.executable, *SERVE], env=env, stderr=None) as proc:
        buffer = bytearray()
        try:
            with anyio.fail_after(60):
                await _send(proc, json.dumps(initialize).encode())
                reply = await _read_reply(proc, buffer, 1)
                assert reply["result"]["serverInfo"]["name"] == "localmcp-inference"
                await _send(proc, b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')

                await _send(proc, b"\xff\xfe\x00garbage \xc3\x28 not json")
                await _send(proc, fit_call)
                reply = await _read_reply(proc, buffer, 2)
                result = reply["result"]
                assert not result.get("isError"), result
                assert result["structuredContent"]["model"] == "qwen2.5:7b-\ufffd\ufffd-\ufffd"
                assert result["structuredContent"]["fits"] is True

                await _send(proc, b'{"jsonrpc": "2.0", "id": 3, "method": "tools/list"}')
                reply = await _read_reply(proc, buffer, 3)
                assert len(reply["result"]["tools"]) == 8
                assert proc.returncode is None
        finally:
            assert proc.stdin is not None
            await proc.stdin.aclose()
            with anyio.fail_after(20):
                await proc.wait()

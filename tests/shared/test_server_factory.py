"""The server factory turns every failure into an actionable MCP tool error."""

from __future__ import annotations

from typing import Any

import anyio
from mcp import Client
from pydantic import BaseModel

from localmcp.shared.errors import BadInput
from localmcp.shared.server import Context, ProgressReporter, create_server, tool_errors


class Echo(BaseModel):
    text: str


def _server() -> Any:
    server = create_server("test", version="0", instructions="test server")

    @server.tool()
    @tool_errors
    async def echo(text: str) -> Echo:
        """Echo the text back."""
        return Echo(text=text)

    @server.tool()
    @tool_errors
    async def refuse(value: str) -> Echo:
        """Always refuse with a BadInput."""
        raise BadInput(f"value {value!r} is not allowed.", hint="Pass 'ok' instead.")

    @server.tool()
    @tool_errors
    async def crash() -> Echo:
        """Fail with an unexpected exception."""
        return Echo(text=str(1 / 0))

    @server.tool()
    @tool_errors
    async def count(n: int, ctx: Context) -> Echo:
        """Report progress n times."""
        report = ProgressReporter(ctx, min_interval_s=0)
        for i in range(1, n + 1):
            await report(i, n, f"step {i}")
        return Echo(text="done")

    return server


async def test_tool_signature_is_its_schema() -> None:
    async with Client(_server()) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert tools["echo"].input_schema["properties"]["text"]["type"] == "string"
    assert tools["echo"].output_schema is not None
    assert tools["echo"].output_schema["properties"]["text"]["type"] == "string"


async def test_structured_result_round_trips_cjk_and_emoji() -> None:
    text = "知识库 🚀 Größe"
    async with Client(_server()) as client:
        result = await client.call_tool("echo", {"text": text})
    assert not result.is_error
    assert result.structured_content == {"text": text}


async def test_anticipated_error_keeps_message_and_hint() -> None:
    async with Client(_server()) as client:
        result = await client.call_tool("refuse", {"value": "bad"})
    assert result.is_error
    message = result.content[0].text  # type: ignore[union-attr]
    assert "value 'bad' is not allowed." in message
    assert "Pass 'ok' instead." in message


async def test_unexpected_error_names_tool_without_traceback() -> None:
    async with Client(_server()) as client:
        result = await client.call_tool("crash", {})
    assert result.is_error
    message = result.content[0].text  # type: ignore[union-attr]
    assert "internal error in crash: ZeroDivisionError" in message
    assert "Traceback" not in message


async def test_wrong_argument_type_is_a_tool_error() -> None:
    async with Client(_server()) as client:
        result = await client.call_tool("count", {"n": "many"})
    assert result.is_error


async def test_progress_notifications_reach_the_client() -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(_server()) as client:
        with anyio.fail_after(10):
            result = await client.call_tool("count", {"n": 3}, progress_callback=on_progress)
    assert not result.is_error
    assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]

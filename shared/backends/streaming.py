"""Pieces shared by the streaming backends: SSE framing, deadlines, ``<think>`` tag splitting."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


SSE_DONE = "[DONE]"


async def sse_data(lines: AsyncIterator[str], *, keep_done: bool = False) -> AsyncIterator[str]:
    """Yield the ``data`` payload of each Server-Sent Event until ``[DONE]`` or the end.

    Lines that are not ``data:`` fields (comments and keep-alive pings starting with ``:``,
    ``event:``, ``id:``, ``retry:``) are skipped; several ``data:`` lines of one event are
    joined with newlines, as the SSE specification says. With ``keep_done`` the ``[DONE]``
    marker itself is yielded last (as ``SSE_DONE``), so a caller can tell a stream the engine
    finished from one that merely stopped.
    """
    pending: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if pending:
                payload = "\n".join(pending)
                pending = []
                if payload.strip() == SSE_DONE:
                    if keep_done:
                        yield SSE_DONE
                    return
                yield payload
            continue
        if not line.startswith("data:"):
            continue
        value = line[5:]
        pending.append(value[1:] if value.startswith(" ") else value)
    if pending:
        payload = "\n".join(pending)
        if payload.strip() != SSE_DONE:
            yield payload
        elif keep_done:
            yield SSE_DONE


async def within_deadline(
    items: AsyncIterator[T], deadline: float, on_timeout: Callable[[], Exception]
) -> AsyncIterator[T]:
    """Re-yield ``items``; raise ``on_timeout()`` once ``anyio.current_time()`` passes ``deadline``.

    Each wait for the next item runs in its own ``fail_after`` scope, so no cancel scope spans
    a ``yield`` and the consumer's own cancellation still reaches the underlying stream.
    """
    iterator = aiter(items)
    try:
        while True:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                raise on_timeout()
            try:
                with anyio.fail_after(remaining):
                    item = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise on_timeout() from None
            yield item
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with anyio.move_on_after(5, shield=True):
                await aclose()


class ThinkSplitter:
    """Separate ``<think>...</think>`` reasoning from the answer in streamed text.

    Reasoning models served without a reasoning parser put their thinking inline, wrapped in
    these tags. Text is fed piece by piece; a tag split across pieces is held back until it
    can be decided. Only a reply that *starts* with ``<think>`` (after whitespace) is split,
    so an answer that merely mentions the tag is left alone.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._state = "start"  # start -> thinking -> answer, or start -> answer

    def feed(self, text: str) -> tuple[str, str]:
        """Add streamed text; return the (thinking, answer) text that is now certain."""
        self._buffer += text
        thinking, answer = "", ""
        while True:
            if self._state == "start":
                stripped = self._buffer.lstrip()
                if not stripped:
                    return thinking, answer
                if stripped.startswith(THINK_OPEN):
                    self._buffer = stripped[len(THINK_OPEN) :]
                    self._state = "thinking"
                    continue
                if THINK_OPEN.startswith(stripped):
                    return thinking, answer  # could still become the opening tag
                self._state = "answer"
                continue
            if self._state == "thinking":
                end = self._buffer.find(THINK_CLOSE)
                if end >= 0:
                    thinking += self._buffer[:end]
                    self._buffer = self._buffer[end + len(THINK_CLOSE) :].lstrip("\n")
                    self._state = "answer"
                    continue
                keep = _partial_suffix(self._buffer, THINK_CLOSE)
                thinking += self._buffer[: len(self._buffer) - keep]
                self._buffer = self._buffer[len(self._buffer) - keep :]
                return thinking, answer
            answer += self._buffer
            self._buffer = ""
            return thinking, answer

    def flush(self) -> tuple[str, str]:
        """Whatever is still held back, at the end of the stream."""
        rest, self._buffer = self._buffer, ""
        if self._state == "thinking":
            return rest, ""
        return "", rest


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0

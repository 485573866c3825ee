"""InferenceService without MCP: input checks, lazy connection, progress batching, heartbeats."""

from __future__ import annotations

import itertools

import pytest
from fixtures.ollama_fixture import FakeOllama, fake_ollama, ollama_server

from localmcp.servers.inference.inputs import build_messages, check_texts, clean_text
from localmcp.servers.inference.models import MessageIn
from localmcp.servers.inference.service import InferenceService, generation_options
from localmcp.shared.backends import Backend
from localmcp.shared.config import BackendSettings, Settings
from localmcp.shared.errors import BadInput

__all__ = ["fake_ollama", "ollama_server"]


def test_clean_text_replaces_only_lone_surrogates() -> None:
    assert clean_text("a\ud800b\udfffc") == "a\ufffdb\ufffdc"
    assert clean_text("中文 🚀 é") == "中文 🚀 é"


def test_conversation_order_is_system_messages_then_prompt() -> None:
    built = build_messages(
        [MessageIn(role="user", content="one"), MessageIn(role="assistant", content="two")],
        "three",
        "rules",
        max_chars=100,
    )
    assert [(m.role, m.content) for m in built] == [
        ("system", "rules"),
        ("user", "one"),
        ("assistant", "two"),
        ("user", "three"),
    ]


def test_size_limit_counts_every_message_and_names_the_setting() -> None:
    messages = [MessageIn(role="user", content="x" * 60)]
    assert len(build_messages(messages, "y" * 40, None, max_chars=100)) == 2
    with pytest.raises(BadInput, match="101 characters; the limit is 100"):
        build_messages(messages, "y" * 41, None, max_chars=100)


def test_texts_to_embed_are_bounded_in_count() -> None:
    with pytest.raises(BadInput, match="at most 3"):
        check_texts(["a", "b", "c", "d"], max_chars=100, max_count=3)


def test_generation_options_out_of_range_are_bad_input() -> None:
    with pytest.raises(BadInput, match="top_p"):
        generation_options(top_p=1.5)


async def test_the_engine_is_connected_on_first_use_only(fake_ollama: FakeOllama) -> None:
    calls: list[BackendSettings] = []

    async def connect(settings: BackendSettings) -> Backend:
        from localmcp.shared.backends.ollama import OllamaBackend

        calls.append(settings)
        return OllamaBackend(fake_ollama.host, settings=settings)

    service = InferenceService(Settings(), connect=connect)
    assert calls == []
    await service.list_models()
    await service.loaded_models()
    assert len(calls) == 1
    await service.aclose()
    await service.list_models()
    assert len(calls) == 2
    await service.aclose()


async def test_progress_is_batched_by_chunk_count(fake_ollama: FakeOllama) -> None:
    fake_ollama.reply = " ".join(f"t{i}" for i in range(20))
    settings = Settings(
        backend={"kind": "ollama", "base_url": fake_ollama.host},
        inference={"progress_every_tokens": 5},
    )
    service = InferenceService(settings)
    seen: list[tuple[float, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen.append((done, message))

    answer = await service.chat(prompt="go", progress=progress)
    assert [done for done, _ in seen] == [1, 6, 11, 16, 20]
    assert "".join(m or "" for _, m in seen) == answer.content
    await service.aclose()


async def test_heartbeats_are_sent_while_the_engine_is_silent(fake_ollama: FakeOllama) -> None:
    fake_ollama.delay_first = 0.6
    settings = Settings(backend={"kind": "ollama", "base_url": fake_ollama.host})
    service = InferenceService(settings, heartbeat_s=0.1)
    seen: list[tuple[float, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen.append((done, message))

    answer = await service.chat(prompt="wait", progress=progress)
    heartbeats = [done for done, message in seen if message is None and done < 1]
    assert len(heartbeats) >= 3
    done = [d for d, _ in seen]
    assert all(a < b for a, b in itertools.pairwise(done))
    assert answer.content == "You said: wait"
    await service.aclose()


async def test_a_failing_progress_callback_stops_the_stream_cleanly(
    fake_ollama: FakeOllama,
) -> None:
    import anyio

    fake_ollama.reply = " ".join(["w"] * 30)
    fake_ollama.delay_between = 0.05
    service = InferenceService(Settings(backend={"kind": "ollama", "base_url": fake_ollama.host}))

    async def progress(done: float, total: float | None, message: str | None) -> None:
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        await service.chat(prompt="x", progress=progress)
    with anyio.fail_after(5):
        while fake_ollama.disconnects == 0:
            await anyio.sleep(0.02)
    await service.aclose()

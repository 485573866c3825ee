"""OllamaBackend through the official client against the in-process Ollama fixture."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import ollama
import pytest
from fixtures.ollama_fixture import FakeOllama, fake_ollama, ollama_server

from localmcp.shared.backends import ChatMessage, GenerationOptions, aclose_stream
from localmcp.shared.backends.ollama import OllamaBackend, ollama_options
from localmcp.shared.config import BackendSettings
from localmcp.shared.errors import (
    BackendTimeout,
    BackendUnavailable,
    BadInput,
    NotFound,
    OutputInvalid,
    UpstreamError,
)

__all__ = ["fake_ollama", "ollama_server"]

USER = [ChatMessage(role="user", content="What is 東京? 🚀")]


def _backend(fake: FakeOllama, **settings: object) -> OllamaBackend:
    return OllamaBackend(fake.host, settings=BackendSettings(**settings))  # type: ignore[arg-type]


@pytest.fixture
async def backend(fake_ollama: FakeOllama) -> AsyncIterator[OllamaBackend]:
    backend = _backend(fake_ollama)
    yield backend
    await backend.aclose()


def closed_port() -> int:
    """A loopback port that was bound here and closed again, so connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def drain(stream: AsyncIterator[Any]) -> None:
    """Consume a stream, so that its errors are raised."""
    async for _ in stream:
        pass


def test_options_map_to_ollama_names() -> None:
    opts = GenerationOptions(temperature=0.2, seed=7, top_p=0.9, max_tokens=64, num_ctx=8192)
    assert ollama_options(opts) == {
        "temperature": 0.2,
        "seed": 7,
        "top_p": 0.9,
        "num_predict": 64,
        "num_ctx": 8192,
    }
    assert ollama_options(None) == {}


async def test_chat_streams_many_chunks_and_ends_with_usage(
    backend: OllamaBackend, fake_ollama: FakeOllama
) -> None:
    chunks = [c async for c in backend.chat_stream("llama3.1:8b", USER)]
    assert len(chunks) > 3
    assert "".join(c.content for c in chunks) == "You said: What is 東京? 🚀"
    assert chunks[-1].done and chunks[-1].finish_reason == "stop"
    assert chunks[-1].completion_tokens == len(chunks) - 1
    path, body = fake_ollama.requests[-1]
    assert path == "/api/chat" and body["stream"] is True


async def test_chat_sends_options_and_stops_at_max_tokens(
    backend: OllamaBackend, fake_ollama: FakeOllama
) -> None:
    opts = GenerationOptions(max_tokens=2, temperature=0, seed=1, num_ctx=4096, stop=["\n"])
    result = await backend.chat("llama3.1:8b", USER, opts)
    assert result.content == "You said:"
    assert result.finish_reason == "length"
    sent = fake_ollama.requests[-1][1]["options"]
    assert sent == {"temperature": 0, "seed": 1, "num_predict": 2, "num_ctx": 4096, "stop": ["\n"]}


async def test_think_returns_reasoning_apart_from_the_answer(backend: OllamaBackend) -> None:
    result = await backend.chat("qwen3:8b", USER, think=True)
    assert result.thinking == "Let me think about that."
    assert result.content == "You said: What is 東京? 🚀"


async def test_think_on_a_model_without_the_capability_is_bad_input(
    backend: OllamaBackend,
) -> None:
    with pytest.raises(BadInput, match="does not support thinking"):
        await backend.chat("llama3.1:8b", USER, think=True)


async def test_inline_think_tags_are_split_from_the_answer(
    backend: OllamaBackend, fake_ollama: FakeOllama
) -> None:
    fake_ollama.reply = "<think>weigh options</think>Final answer"
    result = await backend.chat("llama3.1:8b", USER)
    assert (result.thinking, result.content) == ("weigh options", "Final answer")


async def test_generate_streams_the_response_field(
    backend: OllamaBackend, fake_ollama: FakeOllama
) -> None:
    chunks = [c async for c in backend.generate_stream("llama3.1:8b", "Hi 👋", system="Be brief")]
    assert "".join(c.content for c in chunks) == "You said: Hi 👋"
    path, body = fake_ollama.requests[-1]
    assert path == "/api/generate" and body["system"] == "Be brief"


async def test_json_schema_is_sent_as_format_and_the_reply_is_parsed(
    backend: OllamaBackend, fake_ollama: FakeOllama
) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    result = await backend.chat("llama3.1:8b", USER, json_schema=schema)
    assert result.parsed == {"name": "ok", "age": 1}
    assert fake_ollama.requests[-1][1]["format"] == schema


async def test_reply_violating_the_schema_is_output_invalid(
    backend: OllamaBackend, fake_ollama: FakeOllama
) -> None:
    fake_ollama.reply = '{"name": 5}'
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    with pytest.raises(OutputInvalid, match="5 is not of type 'string'"):
        await backend.chat("llama3.1:8b", USER, json_schema=schema)


async def test_unknown_model_is_not_found_and_lists_local_models(backend: OllamaBackend) -> None:
    with pytest.raises(NotFound) as info:
        await backend.chat("no-such-model", USER)
    message = str(info.value)
    assert "'no-such-model'" in message and "llama3.1:8b" in message and "pull" in message
    with pytest.raises(NotFound):
        await backend.show_model("no-such-model")
    with pytest.raises(NotFound):
        await backend.embed("no-such-model", ["x"])


async def test_chat_or_generate_on_an_embedding_model_is_bad_input_naming_it(
    backend: OllamaBackend, fake_ollama: FakeOllama
) -> None:
    with pytest.raises(BadInput) as info:
        await backend.chat("nomic-embed-text", USER)
    message = str(info.value)
    assert "'nomic-embed-text'" in message and '"nomic-embed-text" does not support chat' in message
    assert "embed" in (info.value.hint or "") and info.value.context["status"] == 400
    with pytest.raises(BadInput, match='"nomic-embed-text" does not support generate') as info:
        await drain(backend.generate_stream("nomic-embed-text", "Hi"))
    assert "cannot generate" in str(info.value) and "chat model" in str(info.value)
    assert await backend.loaded_models() == []


async def test_empty_conversation_or_prompt_is_bad_input_before_any_request(
    backend: OllamaBackend, fake_ollama: FakeOllama
) -> None:
    with pytest.raises(BadInput, match=r"messages is empty; Ollama would only load 'llama3\.1:8b'"):
        await backend.chat("llama3.1:8b", [])
    with pytest.raises(BadInput, match="prompt is empty"):
        await drain(backend.generate_stream("llama3.1:8b", "", system="Be brief"))
    assert fake_ollama.requests == []


async def test_empty_model_name_is_bad_input_not_a_client_validation_error(
    backend: OllamaBackend, fake_ollama: FakeOllama
) -> None:
    with pytest.raises(BadInput, match="model is empty"):
        await backend.show_model("")
    with pytest.raises(BadInput, match="model is empty"):
        await drain(backend.pull(" "))
    with pytest.raises(BadInput, match="model is empty"):
        await backend.embed("", ["x"])
    with pytest.raises(BadInput, match="model is empty"):
        await backend.chat("", USER)
    assert fake_ollama.requests == []


async def test_a_base_url_with_a_path_gets_404_page_not_found_and_a_base_url_hint(
    fake_ollama: FakeOllama,
) -> None:
    backend = OllamaBackend(f"{fake_ollama.url}/v1", settings=BackendSettings())
    with pytest.raises(UpstreamError) as info:
        await backend.chat("llama3.1:8b", USER)
    assert info.value.status == 404
    message = str(info.value)
    assert f"{fake_ollama.url}/v1" in message and "404 page not found" in message
    assert "backend.base_url" in message and "/v1" in (info.value.hint or "")
    with pytest.raises(UpstreamError, match="no Ollama API endpoint for list models"):
        await backend.list_models()
    await backend.aclose()


async def test_injected_failures_reach_show_list_ps_embed_and_pull(
    backend: OllamaBackend, fake_ollama: FakeOllama
) -> None:
    fake_ollama.fail_status = (500, "boom")
    calls: dict[str, Any] = {
        "show": lambda: backend.show_model("llama3.1:8b"),
        "list": backend.list_models,
        "ps": backend.loaded_models,
        "embed": lambda: backend.embed("nomic-embed-text", ["x"]),
    }
    for what, call in calls.items():
        with pytest.raises(UpstreamError, match="answered 500") as info:
            await call()
        assert info.value.status == 500 and "boom" in str(info.value), what
    with pytest.raises(UpstreamError, match="boom"):
        await drain(backend.pull("smollm2:135m"))
    fake_ollama.fail_status = (404, "model 'llama3.1:8b' not found")
    fake_ollama.fail_paths = {"/api/show"}
    with pytest.raises(NotFound, match=r"local models: llama3\.1:8b, qwen3:8b"):
        await backend.show_model("llama3.1:8b")
    assert len(await backend.list_models()) == 3


async def test_error_line_inside_a_stream_becomes_upstream_error(
    backend: OllamaBackend, fake_ollama: FakeOllama
) -> None:
    fake_ollama.fail_after_chunks = 2
    received: list[str] = []
    with pytest.raises(UpstreamError, match="llama runner process has terminated"):
        async for chunk in backend.chat_stream("llama3.1:8b", USER):
            received.append(chunk.content)
    assert received == ["You", " said:"]


async def test_http_error_keeps_the_engines_status_and_message(
    backend: OllamaBackend, fake_ollama: FakeOllama
) -> None:
    fake_ollama.fail_status = (503, "server busy, please try again.  maximum pending requests")
    with pytest.raises(UpstreamError) as info:
        await backend.chat("llama3.1:8b", USER)
    assert info.value.status == 503
    assert "server busy" in str(info.value) and "retry" in str(info.value)
    assert len([r for r in fake_ollama.requests if r[0] == "/api/chat"]) == 1


async def test_connection_refused_is_backend_unavailable_after_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = closed_port()
    backend = OllamaBackend(f"127.0.0.1:{port}", settings=BackendSettings(retries=2))
    with caplog.at_level("INFO", logger="localmcp.shared.backends.ollama"):
        with pytest.raises(BackendUnavailable) as info:
            await backend.chat("llama3.1:8b", USER)
        with pytest.raises(BackendUnavailable):
            await backend.list_models()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "ollama serve" in str(info.value)
    assert sum("retry" in r.getMessage() for r in caplog.records) == 4
    await backend.aclose()


async def test_slow_engine_hits_the_read_timeout_named_in_the_message(
    fake_ollama: FakeOllama,
) -> None:
    fake_ollama.delay_first = 3.0
    backend = _backend(fake_ollama, read_timeout=0.3)
    with anyio.fail_after(10), pytest.raises(BackendTimeout, match=r"backend\.read_timeout"):
        await backend.chat("llama3.1:8b", USER)
    await backend.aclose()


async def test_long_generation_is_bounded_by_generation_timeout(fake_ollama: FakeOllama) -> None:
    fake_ollama.reply = " ".join(["word"] * 50)
    fake_ollama.delay_between = 0.1
    backend = _backend(fake_ollama, generation_timeout=0.5, read_timeout=5)
    got: list[str] = []
    with anyio.fail_after(10), pytest.raises(BackendTimeout, match="generation_timeout"):
        async for chunk in backend.chat_stream("llama3.1:8b", USER):
            got.append(chunk.content)
    assert 0 < len(got) < 50
    await backend.aclose()


async def test_read_timeout_does_not_cut_a_long_answer_that_keeps_streaming(
    fake_ollama: FakeOllama,
) -> None:
    fake_ollama.reply = " ".join(["token"] * 12)
    fake_ollama.delay_between = 0.1
    backend = _backend(fake_ollama, read_timeout=0.5)
    result = await backend.chat("llama3.1:8b", USER)
    assert result.content.split() == ["token"] * 12
    await backend.aclose()


async def test_cancelling_the_caller_closes_the_engine_stream(fake_ollama: FakeOllama) -> None:
    fake_ollama.reply = " ".join(["slow"] * 40)
    fake_ollama.delay_between = 0.2
    backend = _backend(fake_ollama)
    first = anyio.Event()

    async def consume() -> None:
        async for _ in backend.chat_stream("llama3.1:8b", USER):
            first.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        with anyio.fail_after(5):
            await first.wait()
        tg.cancel_scope.cancel()
    with anyio.fail_after(5):
        while fake_ollama.disconnects == 0:
            await anyio.sleep(0.02)
    assert fake_ollama.completed_streams == 0
    await backend.aclose()


async def test_closing_an_unfinished_stream_releases_it(fake_ollama: FakeOllama) -> None:
    fake_ollama.reply = " ".join(["slow"] * 40)
    fake_ollama.delay_between = 0.2
    backend = _backend(fake_ollama)
    stream = backend.chat_stream("llama3.1:8b", USER)
    await anext(stream)
    await aclose_stream(stream)
    with anyio.fail_after(5):
        while fake_ollama.disconnects == 0:
            await anyio.sleep(0.02)
    await backend.aclose()


async def test_list_show_and_ps_report_what_the_engine_knows(backend: OllamaBackend) -> None:
    names = [m.name for m in await backend.list_models()]
    assert names == ["llama3.1:8b", "qwen3:8b", "nomic-embed-text:latest"]
    info = await backend.show_model("qwen3:8b")
    assert info.family == "qwen3"
    assert info.parameter_count == 8_190_735_360
    assert info.quantization == "Q4_K_M"
    assert info.context_length == 40_960
    assert info.details["model_info"]["qwen3.block_count"] == 36
    assert "thinking" in info.capabilities
    assert await backend.loaded_models() == []
    await backend.chat("llama3.1:8b", USER)
    loaded = await backend.loaded_models()
    assert [m.name for m in loaded] == ["llama3.1:8b"]
    assert loaded[0].vram_bytes and loaded[0].size_bytes and loaded[0].expires_at is not None


async def test_loaded_models_expire_after_ollamas_default_keep_alive(
    backend: OllamaBackend,
) -> None:
    await backend.chat("llama3.1:8b", USER)
    (loaded,) = await backend.loaded_models()
    assert loaded.expires_at is not None
    left = loaded.expires_at - datetime.now(UTC)
    assert timedelta(minutes=4) < left <= timedelta(minutes=5)


async def test_fixture_empty_requests_load_and_unload_and_keep_alive_sets_expiry(
    backend: OllamaBackend, fake_ollama: FakeOllama
) -> None:
    async with ollama.AsyncClient(host=fake_ollama.host) as client:
        loaded = await client.chat("llama3.1:8b", messages=[], keep_alive="10m")
        assert (loaded.done, loaded.done_reason, loaded.message.content) == (True, "load", "")
        generated = await client.generate("qwen3:8b", "", keep_alive=-1)
        assert (generated.done, generated.done_reason, generated.response) == (True, "load", "")
        now = datetime.now(UTC)
        left = {m.name: (m.expires_at or now) - now for m in await backend.loaded_models()}
        assert list(left) == ["qwen3:8b", "llama3.1:8b"]  # latest expiry first, as Ollama
        assert timedelta(minutes=9) < left["llama3.1:8b"] <= timedelta(minutes=10)
        assert left["qwen3:8b"] > timedelta(days=365 * 200)

        unloaded = await client.chat("llama3.1:8b", messages=[], keep_alive=0)
        assert (unloaded.done_reason, unloaded.message.content) == ("unload", "")
        assert (await client.generate("qwen3:8b", "", keep_alive="0s")).done_reason == "unload"
        assert await backend.loaded_models() == []

        answered = await client.chat("llama3.1:8b", messages=[USER[0].model_dump()], keep_alive=0)
        assert answered.message.content == "You said: What is 東京? 🚀"
        assert await backend.loaded_models() == []
        # unloading needs no completion capability; loading an embedding model does
        embed_unload = await client.chat("nomic-embed-text", messages=[], keep_alive=0)
        assert embed_unload.done_reason == "unload"
        with pytest.raises(ollama.ResponseError, match='"nomic-embed-text" does not support chat'):
            await client.chat("nomic-embed-text", messages=[])


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        (
            "/api/chat",
            {"model": "llama3.1:8b", "messages": "hi"},
            "json: cannot unmarshal string into Go struct field ChatRequest.messages of type "
            "[]api.Message",
        ),
        ("/api/chat", {"model": "llama3.1:8b", "messages": ["hi"]}, "cannot unmarshal string"),
        (
            "/api/chat",
            {"model": "llama3.1:8b", "messages": [{"role": "user", "content": 7}]},
            "cannot unmarshal number into Go struct field ChatRequest.messages.content",
        ),
        ("/api/generate", {"model": "llama3.1:8b", "prompt": ["hi"]}, "cannot unmarshal array"),
        ("/api/chat", {"model": 5, "messages": []}, "cannot unmarshal number"),
        ("/api/generate", {"model": "llama3.1:8b", "options": "hot"}, "cannot unmarshal string"),
        (
            "/api/chat",
            {"model": "llama3.1:8b", "messages": [], "keep_alive": "10"},
            'time: missing unit in duration "10"',
        ),
        ("/api/generate", {"model": "llama3.1:8b", "keep_alive": "soon"}, "time: invalid"),
        ("/api/generate", {"model": "llama3.1:8b", "keep_alive": True}, "Unsupported type"),
        ("/api/embed", {"model": "nomic-embed-text", "input": 5}, "invalid input type"),
        ("/api/embed", {"model": "nomic-embed-text", "input": ["a", 5]}, "invalid input type"),
        ("/api/embed", {"model": "nomic-embed-text", "input": {"a": 1}}, "invalid input type"),
        ("/api/pull", {"model": ""}, "model is required"),
        ("/api/pull", {"stream": False}, "model is required"),
    ],
)
async def test_fixture_answers_malformed_bodies_with_a_json_400(
    fake_ollama: FakeOllama, path: str, body: dict[str, Any], error: str
) -> None:
    async with httpx.AsyncClient(base_url=fake_ollama.url) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert error in response.json()["error"]
    assert fake_ollama.loaded == {}


async def test_fixture_answers_unknown_paths_as_go_does(fake_ollama: FakeOllama) -> None:
    async with httpx.AsyncClient(base_url=fake_ollama.url) as client:
        for method, path in [("GET", "/api/nope"), ("POST", "/v1/api/chat"), ("GET", "/x")]:
            response = await client.request(method, path)
            assert (response.status_code, response.text) == (404, "404 page not found")
            assert response.headers["content-type"].startswith("text/plain")
        wrong_method = await client.get("/api/chat")
        assert (wrong_method.status_code, wrong_method.text) == (405, "405 method not allowed")
        empty = await client.post("/api/embed", json={"model": "nomic-embed-text", "input": ""})
        assert empty.json() == {"model": "nomic-embed-text:latest", "embeddings": []}


async def test_pull_yields_the_progress_sequence_and_adds_the_model(
    backend: OllamaBackend,
) -> None:
    steps = [p async for p in backend.pull("smollm2:135m")]
    statuses = [p.status for p in steps]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    completed = [p.completed for p in steps if p.completed is not None]
    assert completed == sorted(completed) and completed[-1] == steps[2].total
    assert "smollm2:135m" in [m.name for m in await backend.list_models()]


async def test_failed_pull_is_upstream_error_with_the_engines_message(
    backend: OllamaBackend,
) -> None:
    with pytest.raises(UpstreamError, match="file does not exist"):
        async for _ in backend.pull("nonexistent-model"):
            pass


async def test_embed_returns_one_unit_vector_per_text_in_order(backend: OllamaBackend) -> None:
    texts = ["alpha", "中文文本", "emoji 🚀"]
    result = await backend.embed_batch("nomic-embed-text", texts)
    assert result.pooling == "engine" and result.dimension == 8
    assert len(result.vectors) == 3
    assert result.vectors[0] != result.vectors[1]
    for vector in result.vectors:
        assert math.fsum(x * x for x in vector) == pytest.approx(1.0)
    assert await backend.embed("nomic-embed-text", []) == []


async def test_ollama_host_is_honoured_when_no_base_url_is_set(
    fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.host)
    backend = OllamaBackend(None, settings=BackendSettings())
    assert backend.base_url == fake_ollama.url
    assert len(await backend.list_models()) == 3
    await backend.aclose()


async def _live_ollama() -> str | None:
    host = os.environ.get("OLLAMA_HOST")
    if not host:
        return None
    backend = OllamaBackend(host, settings=BackendSettings(connect_timeout=1, retries=0))
    try:
        models = await backend.list_models()
    except Exception:
        return None
    finally:
        await backend.aclose()
    return host if models else None


@pytest.mark.live_ollama
async def test_live_ollama_lists_and_chats_with_its_first_model() -> None:
    host = await _live_ollama()
    if host is None:
        pytest.skip("OLLAMA_HOST is unset, does not answer, or has no models")
    backend = OllamaBackend(host, settings=BackendSettings())
    models = await backend.list_models()
    info = await backend.show_model(models[0].name)
    assert info.name == models[0].name
    if "embedding" in info.capabilities:
        vectors = await backend.embed(models[0].name, ["hello"])
        assert len(vectors) == 1 and vectors[0]
    else:
        result = await backend.chat(
            models[0].name,
            [ChatMessage(role="user", content="Say OK.")],
            GenerationOptions(max_tokens=8),
        )
        assert result.content or result.thinking
    await backend.aclose()

"""OpenAICompatBackend against the real llama.cpp engine and a scripted OpenAI-style server."""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from fixtures.openai_fixture import MODEL, FakeOpenAI, fake_openai, openai_server

from localmcp.engine import LlamaEngine
from localmcp.shared.backends import ChatMessage, GenerationOptions
from localmcp.shared.backends.openai_compat import OpenAICompatBackend, normalise_base_url
from localmcp.shared.config import BackendSettings
from localmcp.shared.errors import (
    BackendTimeout,
    BackendUnavailable,
    NotFound,
    OutputInvalid,
    Unsupported,
    UpstreamError,
)

__all__ = ["fake_openai", "openai_server"]

USER = [ChatMessage(role="user", content="Name a colour. 色 🎨")]
SCHEMA = {
    "type": "object",
    "properties": {"colour": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["colour", "score"],
}


def _backend(url: str, **settings: Any) -> OpenAICompatBackend:
    return OpenAICompatBackend(url, settings=BackendSettings(**settings))


@pytest.fixture
async def scripted(fake_openai: FakeOpenAI) -> AsyncIterator[OpenAICompatBackend]:
    backend = _backend(fake_openai.base_url)
    yield backend
    await backend.aclose()


@pytest.fixture
async def real(llama_engine: LlamaEngine) -> AsyncIterator[OpenAICompatBackend]:
    backend = _backend(llama_engine.base_url)
    yield backend
    await backend.aclose()


def test_base_url_gets_a_scheme_and_v1_when_missing() -> None:
    assert normalise_base_url("127.0.0.1:8080") == "http://127.0.0.1:8080/v1"
    assert normalise_base_url("http://h:1/v1/") == "http://h:1/v1"
    assert normalise_base_url("https://h/api/openai/v1") == "https://h/api/openai/v1"


# -- the real engine -----------------------------------------------------------------------


@pytest.mark.engine
async def test_real_engine_streams_a_chat_reply(
    real: OpenAICompatBackend, llama_engine: LlamaEngine
) -> None:
    chunks = [
        c
        async for c in real.chat_stream(
            llama_engine.model, USER, GenerationOptions(max_tokens=12, temperature=0, seed=1)
        )
    ]
    assert len(chunks) >= 3
    assert "".join(c.content for c in chunks).strip()
    assert chunks[-1].done and chunks[-1].finish_reason in ("stop", "length")


@pytest.mark.engine
async def test_real_engine_structured_output_is_validated_and_parsed(
    real: OpenAICompatBackend, llama_engine: LlamaEngine
) -> None:
    result = await real.chat(
        llama_engine.model,
        [ChatMessage(role="user", content="Give a colour and a score as JSON.")],
        GenerationOptions(max_tokens=60, temperature=0),
        json_schema=SCHEMA,
    )
    assert isinstance(result.parsed, dict)
    assert isinstance(result.parsed["colour"], str) and isinstance(result.parsed["score"], int)


@pytest.mark.engine
async def test_real_engine_per_token_embeddings_are_mean_pooled(
    real: OpenAICompatBackend, llama_engine: LlamaEngine
) -> None:
    result = await real.embed_batch(llama_engine.model, ["hello world", "你好，世界 🌏"])
    assert result.pooling == "mean"
    assert result.dimension == 576
    for vector in result.vectors:
        assert math.fsum(x * x for x in vector) == pytest.approx(1.0)
    assert result.vectors[0] != result.vectors[1]


@pytest.mark.engine
async def test_real_engine_refuses_token_vectors_when_pooling_is_none(
    llama_engine: LlamaEngine,
) -> None:
    backend = _backend(llama_engine.base_url, embed_pooling="none")
    with pytest.raises(Unsupported, match="--pooling mean"):
        await backend.embed(llama_engine.model, ["hello"])
    await backend.aclose()


@pytest.mark.engine
async def test_real_engine_unknown_model_lists_the_served_one(
    real: OpenAICompatBackend, llama_engine: LlamaEngine
) -> None:
    with pytest.raises(NotFound) as info:
        await real.chat("no-such-model", USER)
    assert llama_engine.model in str(info.value)


@pytest.mark.engine
async def test_real_engine_reports_the_served_model_as_loaded_and_cannot_pull(
    real: OpenAICompatBackend, llama_engine: LlamaEngine
) -> None:
    assert [m.name for m in await real.list_models()] == [llama_engine.model]
    assert [m.name for m in await real.loaded_models()] == [llama_engine.model]
    assert (await real.show_model(llama_engine.model)).name == llama_engine.model
    with pytest.raises(Unsupported, match="this engine cannot pull models"):
        async for _ in real.pull("llama3.1:8b"):
            pass


@pytest.mark.engine
async def test_real_engine_generate_continues_the_prompt(
    real: OpenAICompatBackend, llama_engine: LlamaEngine
) -> None:
    chunks = [
        c
        async for c in real.generate_stream(
            llama_engine.model, "Once upon a time", options=GenerationOptions(max_tokens=6)
        )
    ]
    assert "".join(c.content for c in chunks)
    assert chunks[-1].finish_reason == "length"


# -- scripted engine: what llama.cpp here cannot show ----------------------------------------


async def test_sse_pings_are_skipped_and_usage_is_reported(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    result = await scripted.chat(MODEL, USER)
    assert result.content == "Hello there"
    assert (result.prompt_tokens, result.completion_tokens) == (7, 2)
    body = fake_openai.requests[-1][1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_an_engine_ignoring_stream_still_gives_the_whole_reply(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    fake_openai.ignore_stream = True
    result = await scripted.chat(MODEL, USER)
    assert (result.content, result.finish_reason, result.completion_tokens) == (
        "Hello there",
        "stop",
        2,
    )


async def test_reasoning_content_deltas_become_thinking(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    fake_openai.deltas = [
        {"reasoning_content": "Consider "},
        {"reasoning": "blue."},
        {"content": "Blue"},
    ]
    result = await scripted.chat(MODEL, USER, think=True)
    assert (result.thinking, result.content) == ("Consider blue.", "Blue")
    assert fake_openai.requests[-1][1]["chat_template_kwargs"] == {"enable_thinking": True}


async def test_think_tags_in_content_become_thinking(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    fake_openai.deltas = [{"content": "<think>hm"}, {"content": "m</think>"}, {"content": "Red"}]
    result = await scripted.chat(MODEL, USER)
    assert (result.thinking, result.content) == ("hmm", "Red")


async def test_json_schema_falls_back_to_json_object_when_refused(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reject_json_schema = True
    fake_openai.deltas = [{"content": '{"colour": "red", '}, {"content": '"score": 3}'}]
    result = await scripted.chat(MODEL, USER, json_schema=SCHEMA)
    assert result.parsed == {"colour": "red", "score": 3}
    formats = [b.get("response_format", {}).get("type") for _, b in fake_openai.requests]
    assert formats == ["json_schema", "json_object"]
    assert fake_openai.requests[-1][1]["response_format"]["schema"] == SCHEMA
    await scripted.chat(MODEL, USER, json_schema=SCHEMA)
    assert fake_openai.requests[-1][1]["response_format"]["type"] == "json_object"


async def test_schema_violating_reply_is_output_invalid(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    fake_openai.deltas = [{"content": '{"colour": "red"}'}]
    with pytest.raises(OutputInvalid, match="'score' is a required property"):
        await scripted.chat(MODEL, USER, json_schema=SCHEMA)


async def test_vllm_model_not_found_lists_the_models_it_has(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    fake_openai.models.append({"id": "other", "object": "model", "owned_by": "vllm"})
    await scripted.list_models()
    fake_openai.models.pop()
    with pytest.raises(NotFound) as info:
        await scripted.chat("other", USER)
    assert MODEL in str(info.value) and "'other'" in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "maximum context length is 32768 tokens", "type": "BadRequest"}},
        {
            "object": "error",
            "message": "maximum context length is 32768 tokens",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    ],
    ids=["nested", "vllm-legacy-flat"],
)
async def test_error_bodies_in_both_shapes_keep_status_and_message(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI, body: dict[str, Any]
) -> None:
    fake_openai.fail = (400, body)
    with pytest.raises(UpstreamError) as info:
        await scripted.chat(MODEL, USER)
    assert info.value.status == 400
    assert "maximum context length is 32768 tokens" in str(info.value)
    assert "Shorten the prompt" in str(info.value)
    chats = [p for p, _ in fake_openai.requests if p.endswith("chat/completions")]
    assert len(chats) == 1  # answered: never retried


async def test_error_event_mid_stream_is_upstream_error(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    fake_openai.error_event = {"error": {"message": "CUDA out of memory", "code": 500}}
    with pytest.raises(UpstreamError, match="CUDA out of memory"):
        await scripted.chat(MODEL, USER)


async def test_connection_refused_names_the_url_and_how_to_start_an_engine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = _backend(f"http://127.0.0.1:{port}/v1", retries=1)
    with caplog.at_level("INFO"), pytest.raises(BackendUnavailable) as info:
        await backend.list_models()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "LOCALMCP_BACKEND__BASE_URL" in str(info.value)
    assert sum("retry 1/1" in r.getMessage() for r in caplog.records) == 1
    await backend.aclose()


async def test_slow_first_token_hits_read_timeout(fake_openai: FakeOpenAI) -> None:
    fake_openai.delay_first = 3.0
    backend = _backend(fake_openai.base_url, read_timeout=0.3)
    with anyio.fail_after(10), pytest.raises(BackendTimeout, match=r"backend\.read_timeout"):
        await backend.chat(MODEL, USER)
    await backend.aclose()


async def test_generation_timeout_bounds_a_stream_that_never_ends(fake_openai: FakeOpenAI) -> None:
    fake_openai.deltas = [{"content": f" t{i}"} for i in range(100)]
    fake_openai.delay_between = 0.05
    backend = _backend(fake_openai.base_url, generation_timeout=0.5, read_timeout=5)
    with anyio.fail_after(10), pytest.raises(BackendTimeout, match="generation_timeout"):
        await backend.chat(MODEL, USER)
    await backend.aclose()
    with anyio.fail_after(5):
        while fake_openai.disconnects == 0:
            await anyio.sleep(0.02)


async def test_cancelled_caller_closes_the_sse_stream(fake_openai: FakeOpenAI) -> None:
    fake_openai.deltas = [{"content": f" t{i}"} for i in range(100)]
    fake_openai.delay_between = 0.1
    backend = _backend(fake_openai.base_url)
    with anyio.move_on_after(0.5):
        await backend.chat(MODEL, USER)
    with anyio.fail_after(5):
        while fake_openai.disconnects == 0:
            await anyio.sleep(0.02)
    await backend.aclose()


async def test_per_token_vectors_are_pooled_in_input_order(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    fake_openai.embed_mode = "per_token"
    result = await scripted.embed_batch(MODEL, ["ab", "abcd"])
    assert result.pooling == "mean"
    # tokens (n, 1, 0) and (n, 3, 0): mean (n, 2, 0), normalised
    for vector, n in zip(result.vectors, (2, 4), strict=True):
        norm = math.hypot(n, 2)
        assert vector == pytest.approx([n / norm, 2 / norm, 0.0])


async def test_pooled_vectors_pass_through_untouched(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    result = await scripted.embed_batch(MODEL, ["x"])
    assert (result.pooling, result.vectors) == ("engine", [[0.6, 0.8, 0.0]])


async def test_llama_server_pooling_none_falls_back_to_its_native_endpoint(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    fake_openai.embed_mode = "pooling_none_400"
    result = await scripted.embed_batch(MODEL, ["abc"])
    assert result.pooling == "mean" and len(result.vectors) == 1
    assert [p for p, _ in fake_openai.requests][-2:] == ["/v1/embeddings", "/embeddings"]


async def test_rerank_scores_follow_document_order(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    scores = await scripted.rerank(MODEL, "red apple", ["blue sky", "red apple pie", "apple"])
    assert scores == [0.0, 1.0, 0.5]
    fake_openai.rerank = False
    with pytest.raises(Unsupported, match="no rerank endpoint"):
        await scripted.rerank(MODEL, "q", ["d"])


async def test_vllm_max_model_len_becomes_context_length(scripted: OpenAICompatBackend) -> None:
    info = await scripted.show_model(MODEL)
    assert info.context_length == 32768
    assert [m.name for m in await scripted.loaded_models()] == [MODEL]


async def test_api_key_is_sent_as_bearer_token(fake_openai: FakeOpenAI) -> None:
    import httpx

    seen: list[str | None] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"object": "list", "data": []})

    backend = OpenAICompatBackend(
        fake_openai.base_url, api_key="sk-local", transport=httpx.MockTransport(handler)
    )
    assert await backend.list_models() == []
    assert seen == ["Bearer sk-local"]
    await backend.aclose()


# -- streams that end without an answer ------------------------------------------------------


async def test_stream_ending_without_finish_or_done_is_an_upstream_error(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    # llama-cpp-python with a prompt longer than its context: the role chunk, then nothing.
    fake_openai.deltas = []
    fake_openai.end_early = True
    with pytest.raises(UpstreamError) as info:
        await scripted.chat(MODEL, USER)
    message = str(info.value)
    assert "ended the stream without an answer" in message
    assert fake_openai.base_url in message and "context window" in message
    assert "--n_ctx" in message and "-c" in message
    with pytest.raises(UpstreamError, match="without an answer"):
        async for _ in scripted.generate_stream(MODEL, "x " * 50):
            pass


async def test_stream_cut_off_mid_answer_is_an_upstream_error(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    fake_openai.end_early = True
    with pytest.raises(UpstreamError, match="before finishing the answer") as info:
        await scripted.chat(MODEL, USER)
    assert "context window" in str(info.value)


async def test_stream_with_done_but_no_choices_is_an_upstream_error(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI
) -> None:
    import httpx

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": []})
        body = b": ping\n\ndata: [DONE]\n\n"
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    backend = OpenAICompatBackend(fake_openai.base_url, transport=httpx.MockTransport(handler))
    with pytest.raises(UpstreamError, match="without an answer"):
        await backend.chat(MODEL, USER)
    await backend.aclose()


@pytest.mark.engine
async def test_real_engine_prompt_beyond_the_context_is_a_clear_error(
    real: OpenAICompatBackend, llama_engine: LlamaEngine
) -> None:
    # llama-cpp-python logs "Requested tokens (...) exceed context window of 2048" and ends
    # the stream after the role chunk, with no finish_reason and no [DONE].
    prompt = [ChatMessage(role="user", content="x " * 5000)]
    with pytest.raises(UpstreamError) as info:
        await real.chat(llama_engine.model, prompt, GenerationOptions(max_tokens=4))
    message = str(info.value)
    assert "without an answer" in message and "context window" in message
    assert llama_engine.base_url in message


# -- malformed engine replies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("<html><body>502 Bad Gateway</body></html>", "not JSON"),
        ({"data": [{"object": "embedding", "index": 0}]}, "no 'embedding'"),
        ({"data": ["0.1 0.2", "0.3 0.4"]}, "not an object"),
        ({"data": [{"index": 0, "embedding": [[1.0, 2.0], [1.0]]}]}, "different lengths"),
        ({"data": [{"index": 0, "embedding": [float("nan"), 1.0]}]}, "NaN or infinity"),
        ({"data": [{"index": 0, "embedding": [float("inf"), 1.0]}]}, "NaN or infinity"),
        ({"data": [{"index": 0, "embedding": ["a", "b"]}]}, "not a number"),
        ({"data": [{"index": 0, "embedding": []}]}, "empty"),
        (
            {"data": [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 1, "embedding": [1.0]}]},
            "different lengths",
        ),
        (
            {"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]},
            "index",
        ),
    ],
    ids=[
        "html",
        "no-embedding",
        "strings",
        "ragged-tokens",
        "nan",
        "inf",
        "non-numbers",
        "empty-vector",
        "ragged-texts",
        "duplicate-index",
    ],
)
async def test_malformed_embeddings_are_upstream_errors_naming_the_engine(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI, body: Any, needle: str
) -> None:
    fake_openai.embed_body = body
    with pytest.raises(UpstreamError) as info:
        await scripted.embed_batch(MODEL, ["one", "two"][: max(1, _count(body))])
    message = str(info.value)
    assert f"the engine at {fake_openai.base_url} sent" in message
    assert "localmcp cannot read" in message and needle in message


def _count(body: Any) -> int:
    return len(body["data"]) if isinstance(body, dict) else 1


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ({"raw_events": [{"choices": [{"index": 0, "delta": "oops"}]}]}, "delta"),
        ({"raw_events": [{"choices": "all of them"}]}, "choices"),
        ({"raw_events": [{"choices": [{"delta": {"content": 7}}]}]}, "content"),
        ({"usage": {"prompt_tokens": "many", "completion_tokens": 2}}, "prompt_tokens"),
    ],
    ids=["delta-string", "choices-string", "content-number", "usage-string"],
)
async def test_malformed_stream_chunks_are_upstream_errors_naming_the_engine(
    scripted: OpenAICompatBackend, fake_openai: FakeOpenAI, setup: dict[str, Any], needle: str
) -> None:
    for key, value in setup.items():
        setattr(fake_openai, key, value)
    with pytest.raises(UpstreamError) as info:
        await scripted.chat(MODEL, USER)
    message = str(info.value)
    assert f"the engine at {fake_openai.base_url} sent" in message
    assert "localmcp cannot read" in message and needle in message


async def test_malformed_rerank_results_are_upstream_errors(fake_openai: FakeOpenAI) -> None:
    import httpx

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"results": [{"index": 7, "relevance_score": 0.5}]})

    backend = OpenAICompatBackend(fake_openai.base_url, transport=httpx.MockTransport(handler))
    with pytest.raises(UpstreamError, match=r"localmcp cannot read.*index 7"):
        await backend.rerank(MODEL, "q", ["d"])
    await backend.aclose()

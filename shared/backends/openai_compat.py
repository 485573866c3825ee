"""Any OpenAI-compatible engine over httpx: vLLM, TensorRT-LLM, llama.cpp, LM Studio, Ollama /v1.

Streaming is Server-Sent Events (``stream_options.include_usage`` asks for token counts);
reasoning arrives either in ``reasoning_content`` / ``reasoning`` deltas or inline in
``<think>`` tags, and both end up in ``ChatChunk.thinking``.

Structured output sends the standard ``response_format`` ``json_schema`` first. Engines that
reject it (llama-cpp-python's server) get ``{"type": "json_object", "schema": ...}`` instead,
remembered for the rest of the session; every reply is then validated with ``jsonschema``.

Embeddings: engines that pool return one vector per text and are passed through. llama.cpp
without pooling returns one vector per *token* (llama-cpp-python's server always does; a
``llama-server --pooling none`` refuses ``/v1/embeddings`` and serves them on ``/embeddings``).
With ``backend.embed_pooling = "mean"`` (the default) those token vectors are averaged and
L2-normalised here; with ``"none"`` the call is refused with a message saying how to start the
engine with pooling (``llama-server --embeddings --pooling mean``).

Errors are translated to ``shared.errors``: transport failures in ``_raise_transport``, HTTP
error answers in ``_error``, and replies localmcp cannot read (a body that is not JSON, a
field of the wrong shape, NaN in a vector, ragged vectors) in ``_read``, which runs every
``_parse_*`` function of this module. A stream that stops with neither a ``finish_reason`` nor
``[DONE]`` (llama-cpp-python when the prompt exceeds its context window) is an error too.
Only connection failures before a request reached the engine are retried (``backend.retries``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx

from ..config import BackendSettings
from ..errors import (
    BackendTimeout,
    BackendUnavailable,
    NotFound,
    Unsupported,
    UpstreamError,
)
from .base import (
    Backend,
    ChatChunk,
    ChatMessage,
    Embeddings,
    GenerationOptions,
    LoadedModel,
    ModelInfo,
    PullProgress,
)
from .pooling import is_per_token, mean_pool
from .streaming import SSE_DONE, ThinkSplitter, sse_data, within_deadline
from .structured import check_schema, validate_reply

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: ``owned_by`` values of engines that serve exactly the models they list
_SERVING_ENGINES = {"llamacpp", "me", "vllm", "tensorrt_llm", "trtllm"}
_QUANT_IN_NAME = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|FP16|F32|FP8)(?![A-Za-z0-9])", re.I
)
_MAX_ERROR_CHARS = 1500
#: what reading a reply of an unexpected shape can raise (pydantic's ValidationError and
#: json's JSONDecodeError are ValueErrors)
_READ_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError)

START_HINT = (
    "Start an OpenAI-compatible engine there (e.g. `localmcp demo` starts llama.cpp; "
    "`vllm serve MODEL`; `llama-server -m MODEL.gguf --port 8080`; LM Studio's server on 1234) "
    "or point backend.base_url (LOCALMCP_BACKEND__BASE_URL) at a running one."
)
UNREADABLE_HINT = (
    "Check backend.base_url points at the engine's OpenAI-compatible /v1 root (not a web page "
    "or a proxy), read the engine's log, and retry; if it persists the engine or its model "
    "misbehaves: try another model or engine version."
)
CONTEXT_HINT = (
    "Read the engine's log. Send a shorter prompt (or fewer messages) or ask for fewer tokens "
    "(max_tokens), or restart the engine with a larger context: llama.cpp --n_ctx N "
    "(llama-cpp-python) or -c N (llama-server), vLLM --max-model-len N."
)
PULL_HINT = (
    "Load the model in the engine itself: llama.cpp `llama-server -m FILE.gguf`; vLLM "
    "`vllm serve MODEL`; LM Studio `lms get MODEL` then `lms load MODEL`. Or use Ollama "
    "(backend.kind = 'ollama'), which can pull."
)


def normalise_base_url(url: str) -> str:
    """``host:port`` or ``http://host:port`` become ``http://host:port/v1``; paths are kept."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    if not urlsplit(url).path:
        url = f"{url}/v1"
    return url


class OpenAICompatBackend(Backend):
    """An OpenAI-compatible engine reached at ``base_url`` (``http://host:port/v1``)."""

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        settings: BackendSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings or BackendSettings()
        self.base_url = normalise_base_url(base_url)
        self.default_model = self.settings.model
        self.default_embed_model = self.settings.embed_model
        if api_key is None and self.settings.api_key is not None:
            api_key = self.settings.api_key.get_secret_value()
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        timeout = httpx.Timeout(
            connect=self.settings.connect_timeout,
            read=self.settings.read_timeout,
            write=self.settings.read_timeout,
            pool=self.settings.connect_timeout,
        )
        self._client = httpx.AsyncClient(
            base_url=self.base_url + "/", timeout=timeout, headers=headers, transport=transport
        )
        self._schema_style = "json_schema"
        self._models: list[ModelInfo] | None = None

    # -- transport ---------------------------------------------------------------------

    @property
    def _root(self) -> str:
        """The server root (base URL without its ``/v1`` path), for non-OpenAI endpoints."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    async def _send(
        self, method: str, path: str, *, json_body: Any = None, stream: bool = False
    ) -> httpx.Response:
        """Send one request; retry only when the connection could not be made."""
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            request = self._client.build_request(method, path, json=json_body)
            try:
                return await self._client.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt + 1 >= attempts:
                    self._raise_transport(exc, path)
                delay = min(0.2 * 2**attempt, 2.0)
                logger.info(
                    "cannot connect to %s (%s); retry %d/%d in %.1f s",
                    self.base_url,
                    type(exc).__name__,
                    attempt + 1,
                    attempts - 1,
                    delay,
                )
                await anyio.sleep(delay)
            except httpx.HTTPError as exc:
                self._raise_transport(exc, path)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_transport(self, exc: httpx.HTTPError, path: str) -> NoReturn:
        """Translate an httpx failure (no HTTP status) into the error tree."""
        url = f"{self.base_url}/{path.lstrip('/')}" if "://" not in path else path
        if isinstance(exc, httpx.ConnectTimeout):
            raise BackendTimeout(
                f"connecting to the engine at {self.base_url} took longer than "
                f"{self.settings.connect_timeout:g} s.",
                hint="Check the engine is up and reachable, or raise backend.connect_timeout "
                "(LOCALMCP_BACKEND__CONNECT_TIMEOUT).",
                url=url,
            ) from exc
        if isinstance(exc, httpx.TimeoutException):
            raise BackendTimeout(
                f"the engine at {self.base_url} sent nothing for {self.settings.read_timeout:g} s "
                f"({path}).",
                hint="Raise backend.read_timeout (LOCALMCP_BACKEND__READ_TIMEOUT), shorten the "
                "prompt, or use a smaller model.",
                url=url,
            ) from exc
        if isinstance(exc, httpx.ConnectError):
            raise BackendUnavailable(
                f"cannot connect to the OpenAI-compatible engine at {self.base_url} ({exc}).",
                hint=START_HINT,
                url=url,
            ) from exc
        raise BackendUnavailable(
            f"the connection to the engine at {self.base_url} failed during {path}: "
            f"{type(exc).__name__}: {exc}.",
            hint="Check the engine's log; it may have crashed or been restarted.",
            url=url,
        ) from exc

    async def _error(self, response: httpx.Response, *, model: str | None = None) -> NoReturn:
        """Raise the error an HTTP error response stands for."""
        await response.aread()
        message = _error_message(response)
        status = response.status_code
        path = response.request.url.path
        if status == 404 and model is not None and "model" in message.lower():
            await self._raise_unknown_model(model)
        if status in (401, 403):
            raise UpstreamError(
                f"the engine at {self.base_url} refused the request ({status}): {message}",
                status=status,
                hint="Set backend.api_key (LOCALMCP_BACKEND__API_KEY) to the engine's key.",
            )
        if status == 501 or "does not support embeddings" in message.lower():
            raise Unsupported(
                f"the engine at {self.base_url} does not serve {path}: {message}",
                hint="For embeddings start llama.cpp with --embeddings (llama-cpp-python: "
                "--embedding true), or vLLM with an embedding model.",
                status=status,
            )
        hint = "Read the engine's message; fix the request or the engine's settings."
        if status == 503:
            hint = "The engine is busy or still loading its model; retry in a moment."
        elif "context" in message.lower() and ("length" in message.lower() or "ctx" in message):
            hint = "Shorten the prompt or start the engine with a larger context."
        raise UpstreamError(
            f"the engine at {self.base_url} answered {status} to {path}: {message}",
            status=status,
            hint=hint,
        )

    def _read(self, what: str, parse: Callable[..., T], *args: Any) -> T:
        """``parse(*args)``, with any failure to read the engine's reply as ``UpstreamError``.

        Every reply body passes through here, so a malformed one (not JSON, a missing field,
        a string where an object belongs, NaN in a vector) names the engine and what was wrong
        instead of surfacing as a Python error.
        """
        try:
            return parse(*args)
        except _READ_ERRORS as exc:  # _Malformed included: its message is the detail
            detail = str(exc) if isinstance(exc, _Malformed) else f"{type(exc).__name__}: {exc}"
            if len(detail) > _MAX_ERROR_CHARS:
                detail = detail[:_MAX_ERROR_CHARS] + "..."
            logger.debug("unreadable %s from %s", what, self.base_url, exc_info=True)
            raise UpstreamError(
                f"the engine at {self.base_url} sent {what} that localmcp cannot read: {detail}.",
                hint=UNREADABLE_HINT,
            ) from exc

    async def _raise_unknown_model(self, model: str) -> NoReturn:
        names = [m.name for m in await self._list(refresh=True)]
        raise NotFound(
            f"model {model!r} is not served by the engine at {self.base_url}; it has: "
            f"{', '.join(names) or '(none)'}.",
            hint="Pass one of those names, or load the model in the engine.",
            model=model,
        )

    def _timeout_error(self) -> BackendTimeout:
        return BackendTimeout(
            f"the generation took longer than {self.settings.generation_timeout:g} s "
            f"(engine at {self.base_url}).",
            hint="Raise backend.generation_timeout (LOCALMCP_BACKEND__GENERATION_TIMEOUT) or ask "
            "for fewer tokens (max_tokens).",
        )

    # -- models --------------------------------------------------------------------------

    async def _list(self, *, refresh: bool = False) -> list[ModelInfo]:
        if self._models is not None and not refresh:
            return self._models
        response = await self._send("GET", "models")
        if response.status_code >= 400:
            await self._error(response)
        self._models = self._read("a /models reply", _parse_models, response)
        return self._models

    async def _ensure_model(self, model: str) -> None:
        """``NotFound`` before generating when the engine lists models and not this one.

        Single-model servers (llama.cpp) answer to any name; checking first keeps a typo
        from silently reaching the wrong model.
        """
        try:
            models = await self._list()
            if models and not _known(model, models):
                models = await self._list(refresh=True)
        except UpstreamError:
            return  # an engine without /models: let the request itself decide
        if models and not _known(model, models):
            await self._raise_unknown_model(model)

    async def list_models(self) -> list[ModelInfo]:
        """Models listed by ``GET /v1/models``."""
        models = await self._list(refresh=True)
        logger.info("listed %d models at %s", len(models), self.base_url)
        return models

    async def show_model(self, model: str) -> ModelInfo:
        """The ``/v1/models`` entry of ``model`` (llama.cpp ``meta``, vLLM ``max_model_len``)."""
        models = await self._list(refresh=True)
        for info in models:
            if _same_model(model, info.name):
                return info
        await self._raise_unknown_model(model)

    async def loaded_models(self) -> list[LoadedModel]:
        """Single-model serving engines (llama.cpp, vLLM, TensorRT-LLM): what they serve."""
        models = await self._list(refresh=True)
        serving = [m for m in models if m.details.get("owned_by") in _SERVING_ENGINES]
        if not serving and len(models) == 1:
            serving = models
        return [LoadedModel(name=m.name, context_length=m.context_length) for m in serving]

    async def pull(self, model: str) -> AsyncIterator[PullProgress]:
        """OpenAI-compatible engines cannot download models: always ``Unsupported``."""
        raise Unsupported(
            f"this engine cannot pull models (OpenAI-compatible API at {self.base_url}); "
            f"{model!r} was not downloaded.",
            hint=PULL_HINT,
            model=model,
        )
        yield PullProgress(status="")  # pragma: no cover - makes this an async generator

    # -- generation ----------------------------------------------------------------------

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self._schema_style == "json_object":
            return {"type": "json_object", "schema": schema}
        return {
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": schema, "strict": True},
        }

    async def _open_stream(self, path: str, body: dict[str, Any], *, model: str) -> httpx.Response:
        """POST a streaming request; fall back to ``json_object`` + schema if refused."""
        response = await self._send("POST", path, json_body=body, stream=True)
        if response.status_code < 400:
            return response
        await response.aread()
        await response.aclose()
        schema = body.get("response_format", {}).get("json_schema", {}).get("schema")
        if schema is not None and _rejects_json_schema(_error_message(response)):
            logger.info(
                "engine at %s refuses response_format json_schema; using json_object + schema",
                self.base_url,
            )
            self._schema_style = "json_object"
            body = {**body, "response_format": self._response_format(schema)}
            response = await self._send("POST", path, json_body=body, stream=True)
            if response.status_code < 400:
                return response
            await response.aclose()
        await self._error(response, model=model)

    async def _stream(
        self,
        path: str,
        body: dict[str, Any],
        *,
        model: str,
        json_schema: dict[str, Any] | None,
    ) -> AsyncIterator[ChatChunk]:
        """Run one streaming request and turn its SSE events into ``ChatChunk``s."""
        deadline = anyio.current_time() + self.settings.generation_timeout
        splitter = ThinkSplitter()
        answer: list[str] = []
        finish: str | None = None
        usage: tuple[int | None, int | None] = (None, None)
        produced = 0  # characters of answer and reasoning received
        logger.info("POST %s/%s model=%s", self.base_url, path, model)
        response = await self._open_stream(path, body, model=model)
        # An engine that ignored "stream": true answers with one JSON body, read whole before
        # it is parsed; a stream has ended properly only once [DONE] arrives.
        ended = "json" in response.headers.get("content-type", "")
        try:
            lines = within_deadline(response.aiter_lines(), deadline, self._timeout_error)
            events = _whole_reply(lines) if ended else sse_data(lines, keep_done=True)
            async for payload in events:
                if payload == SSE_DONE:
                    ended = True
                    break
                try:
                    event = json.loads(payload)
                except ValueError:
                    logger.debug("skipping a non-JSON SSE event: %.200s", payload)
                    continue
                if not isinstance(event, dict):
                    continue
                if "error" in event or event.get("object") == "error":
                    raise UpstreamError(
                        f"the engine at {self.base_url} failed while streaming: "
                        f"{_message_from_body(event) or payload[:_MAX_ERROR_CHARS]}",
                        hint="Read the engine's log; retry, or shorten the prompt.",
                    )
                chunk = self._read("a stream chunk", _parse_chunk, event)
                if chunk.usage is not None:
                    usage = chunk.usage
                for text, reasoning, finish_reason in chunk.choices:
                    thinking, content = splitter.feed(text)
                    thinking = reasoning + thinking
                    produced += len(text) + len(reasoning)
                    if finish_reason:
                        finish = finish_reason
                    if content or thinking:
                        answer.append(content)
                        yield ChatChunk(content=content, thinking=thinking)
        except httpx.HTTPError as exc:
            self._raise_transport(exc, path)
        finally:
            # Shielded: a cancelled caller must still release the engine's stream.
            with anyio.move_on_after(5, shield=True):
                await response.aclose()

        if finish is None and (not ended or not produced):
            self._raise_no_answer(produced, ended)
        thinking, content = splitter.flush()
        answer.append(content)
        parsed = None
        if json_schema is not None:
            parsed = validate_reply("".join(answer), json_schema, model=model)
        yield ChatChunk(
            content=content,
            thinking=thinking,
            done=True,
            finish_reason=finish,
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            parsed=parsed,
        )

    def _raise_no_answer(self, produced: int, ended: bool) -> NoReturn:
        """The stream stopped without a ``finish_reason``: say so, and the likely cause."""
        markers = "no finish_reason" if ended else "no finish_reason and no [DONE]"
        if not produced:
            message = (
                f"the engine at {self.base_url} ended the stream without an answer "
                f"({markers}); the prompt may exceed its context window."
            )
        else:
            message = (
                f"the engine at {self.base_url} ended the stream after {produced} characters, "
                f"before finishing the answer ({markers}); the prompt and answer may exceed "
                "its context window, or the engine failed."
            )
        raise UpstreamError(message, hint=CONTEXT_HINT)

    def _body(
        self,
        model: str,
        options: GenerationOptions | None,
        json_schema: dict[str, Any] | None,
        think: bool | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        opts = options if options is not None else GenerationOptions.model_validate({})
        for key in ("temperature", "seed", "top_p", "max_tokens", "stop"):
            value = getattr(opts, key)
            if value is not None:
                body[key] = value
        if opts.num_ctx is not None:
            logger.info(
                "num_ctx=%d ignored: OpenAI-compatible engines fix the context at start-up",
                opts.num_ctx,
            )
        if json_schema is not None:
            body["response_format"] = self._response_format(check_schema(json_schema))
        if think is not None:
            # Understood by vLLM and llama.cpp chat templates that can switch reasoning.
            body["chat_template_kwargs"] = {"enable_thinking": think}
        return body

    async def chat_stream(
        self,
        model: str,
        messages: list[ChatMessage],
        options: GenerationOptions | None = None,
        json_schema: dict[str, Any] | None = None,
        think: bool | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """Stream ``/v1/chat/completions``."""
        await self._ensure_model(model)
        body = self._body(model, options, json_schema, think)
        body["messages"] = [m.model_dump() for m in messages]
        async for chunk in self._stream(
            "chat/completions", body, model=model, json_schema=json_schema
        ):
            yield chunk

    async def generate_stream(
        self,
        model: str,
        prompt: str,
        system: str | None = None,
        options: GenerationOptions | None = None,
        json_schema: dict[str, Any] | None = None,
        think: bool | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """Stream ``/v1/completions`` (plain continuation of ``prompt``).

        With a JSON schema the request goes to the chat endpoint instead, the only one where
        OpenAI-compatible engines accept ``response_format``.
        """
        if json_schema is not None:
            messages = [ChatMessage(role="user", content=prompt)]
            if system:
                messages.insert(0, ChatMessage(role="system", content=system))
            async for chunk in self.chat_stream(model, messages, options, json_schema, think):
                yield chunk
            return
        await self._ensure_model(model)
        body = self._body(model, options, None, None)
        body["prompt"] = f"{system}\n\n{prompt}" if system else prompt
        async for chunk in self._stream("completions", body, model=model, json_schema=None):
            yield chunk

    # -- embeddings and rerank -------------------------------------------------------------

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """One vector per text (see the module docstring for per-token engines)."""
        return (await self.embed_batch(model, texts)).vectors

    async def embed_batch(self, model: str, texts: list[str]) -> Embeddings:
        """``/v1/embeddings``, pooling per-token vectors when the engine returns them."""
        if not texts:
            return Embeddings(model=model, vectors=[])
        await self._ensure_model(model)
        logger.info("POST %s/embeddings model=%s texts=%d", self.base_url, model, len(texts))
        body = {"model": model, "input": texts}
        try:
            with anyio.fail_after(self.settings.generation_timeout):
                response = await self._send("POST", "embeddings", json_body=body)
                if response.status_code == 400 and "pooling type 'none'" in response.text.lower():
                    # llama-server --pooling none: only its native endpoint serves token vectors.
                    response = await self._send("POST", f"{self._root}/embeddings", json_body=body)
        except TimeoutError:
            raise self._timeout_error() from None
        if response.status_code >= 400:
            await self._error(response, model=model)
        raw = self._read("an embeddings reply", _json_body, response)
        entries = raw.get("data", raw) if isinstance(raw, dict) else raw
        if not isinstance(entries, list) or len(entries) != len(texts):
            got = len(entries) if isinstance(entries, list) else "no"
            raise UpstreamError(
                f"the engine at {self.base_url} returned {got} embeddings for {len(texts)} texts.",
                hint="Check the engine serves an embedding-capable model.",
            )
        vectors = self._read("embeddings", _parse_embeddings, entries)
        if not any(is_per_token(v) for v in vectors):
            return Embeddings(model=model, vectors=vectors)
        if self.settings.embed_pooling == "none":
            raise Unsupported(
                f"the engine at {self.base_url} returned one vector per token for {model!r} "
                "(no pooling), and backend.embed_pooling is 'none'.",
                hint="Start the engine with pooling (llama.cpp: llama-server --embeddings "
                "--pooling mean), or set backend.embed_pooling = 'mean' "
                "(LOCALMCP_BACKEND__EMBED_POOLING=mean) to pool here.",
            )
        pooled = self._read("embeddings", _pool, vectors)
        return Embeddings(model=model, vectors=pooled, pooling="mean")

    async def rerank(self, model: str, query: str, documents: list[str]) -> list[float]:
        """Scores from ``/v1/rerank`` (llama.cpp ``--reranking``, vLLM), else ``/rerank``."""
        if not documents:
            return []
        body = {"model": model, "query": query, "documents": documents}
        response = await self._send("POST", "rerank", json_body=body)
        if response.status_code == 404:
            response = await self._send("POST", f"{self._root}/rerank", json_body=body)
        if response.status_code == 404:
            raise Unsupported(
                f"the engine at {self.base_url} has no rerank endpoint (/v1/rerank, /rerank).",
                hint="Unset kb.rerank_model, or start llama.cpp with --reranking and a reranker "
                "model, or vLLM with a cross-encoder.",
            )
        if response.status_code >= 400:
            await self._error(response, model=model)
        raw = self._read("a rerank reply", _json_body, response)
        return self._read("rerank results", _parse_rerank, raw, len(documents))

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()


# -- reading replies (every one of these runs inside OpenAICompatBackend._read) ----------------


class _Malformed(ValueError):
    """A reply of the wrong shape; the message says what was wrong, for ``_read``."""


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def _json_body(response: httpx.Response) -> Any:
    """The JSON body of a (read) response; ``_Malformed`` quoting its start if it is not."""
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type") or "no content type"
        raise _Malformed(
            f"a body that is not JSON ({kind}): {_describe(response.text[:200])}"
        ) from None


def _parse_models(response: httpx.Response) -> list[ModelInfo]:
    raw = _json_body(response)
    if not isinstance(raw, dict) or not isinstance(raw.get("data", []), list):
        raise _Malformed(f"not an OpenAI model list: {_describe(raw)}")
    return [_model_info(entry) for entry in raw.get("data", []) if isinstance(entry, dict)]


@dataclass
class _Chunk:
    """What one streamed event carries: usage if any, and (text, reasoning, finish) per choice."""

    usage: tuple[int | None, int | None] | None = None
    choices: list[tuple[str, str, str | None]] = field(default_factory=list)


def _optional_str(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Malformed(f"{where} is {_describe(value)}, not a string")
    return value


def _token_count(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _Malformed(f"{where} is {_describe(value)}, not a token count")
    return value


def _parse_chunk(event: dict[str, Any]) -> _Chunk:
    """One SSE event (or a whole reply whose messages were renamed ``delta``)."""
    chunk = _Chunk()
    usage = event.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise _Malformed(f"usage is {_describe(usage)}, not an object")
        chunk.usage = (
            _token_count(usage.get("prompt_tokens"), "usage.prompt_tokens"),
            _token_count(usage.get("completion_tokens"), "usage.completion_tokens"),
        )
    choices = event.get("choices") or []
    if not isinstance(choices, list):
        raise _Malformed(f"choices is {_describe(choices)}, not a list")
    for index, choice in enumerate(choices):
        where = f"choices[{index}]"
        if not isinstance(choice, dict):
            raise _Malformed(f"{where} is {_describe(choice)}, not an object")
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise _Malformed(f"{where}.delta is {_describe(delta)}, not an object")
        text = _optional_str(delta.get("content"), f"{where}.delta.content")
        if delta.get("content") is None:
            text = _optional_str(choice.get("text"), f"{where}.text")  # /v1/completions
        reasoning = _optional_str(
            delta.get("reasoning_content") or delta.get("reasoning"), f"{where}.delta.reasoning"
        )
        finish = _optional_str(choice.get("finish_reason"), f"{where}.finish_reason") or None
        chunk.choices.append((text, reasoning, finish))
    return chunk


def _finite(value: Any, where: str) -> float:
    """``value`` as a float: a JSON number that is neither NaN nor infinite."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Malformed(f"{where} holds {_describe(value)}, not a number")
    if not math.isfinite(value):
        raise _Malformed(f"{where} contains NaN or infinity")
    return float(value)


def _number_row(values: Any, where: str) -> list[float]:
    """A non-empty list of finite numbers, as floats."""
    if not isinstance(values, list) or not values:
        raise _Malformed(f"{where} is {_describe(values)}, not a non-empty list of numbers")
    return [_finite(value, where) for value in values]


def _parse_embeddings(entries: list[Any]) -> list[Any]:
    """One vector (or list of token vectors) per entry, in ``index`` order, all checked."""
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _Malformed(f"embedding entry {position} is {_describe(entry)}, not an object")
        if "embedding" not in entry:
            raise _Malformed(f"embedding entry {position} has no 'embedding' field")
    indices = [entry.get("index", position) for position, entry in enumerate(entries)]
    if any(not isinstance(i, int) or isinstance(i, bool) for i in indices) or sorted(
        indices
    ) != list(range(len(entries))):
        raise _Malformed(f"the entries' index fields are {_describe(indices)}, not 0 to n-1")
    by_index = {index: entry for index, entry in zip(indices, entries, strict=True)}
    vectors: list[Any] = []
    width: int | None = None
    for index in range(len(entries)):
        raw = by_index[index]["embedding"]
        where = f"embedding {index}"
        if is_per_token(raw):
            vector: Any = [_number_row(token, f"{where} (a token vector)") for token in raw]
            if len({len(token) for token in vector}) > 1:
                raise _Malformed(f"{where} has token vectors of different lengths")
            size = len(vector[0])
        else:
            vector = _number_row(raw, where)
            size = len(vector)
        if width is not None and size != width:
            raise _Malformed(f"vectors of different lengths ({width} and {size}) in one batch")
        width = size
        vectors.append(vector)
    return vectors


def _pool(vectors: list[Any]) -> list[list[float]]:
    """Mean-pool the per-token vectors of a checked batch; the rest pass through."""
    pooled = [mean_pool(v) if is_per_token(v) else v for v in vectors]
    if not all(math.isfinite(x) for vector in pooled for x in vector):
        raise _Malformed("token vectors whose mean is not finite")
    return pooled


def _parse_rerank(raw: Any, count: int) -> list[float]:
    """One score per document, in document order."""
    results = raw.get("results", raw.get("data", [])) if isinstance(raw, dict) else raw
    if not isinstance(results, list):
        raise _Malformed(f"results is {_describe(results)}, not a list")
    scores = [0.0] * count
    for item in results:
        if not isinstance(item, dict):
            raise _Malformed(f"a result is {_describe(item)}, not an object")
        index = item.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            raise _Malformed(f"a result has index {_describe(index)} for {count} documents")
        score = item.get("relevance_score", item.get("score", 0.0))
        scores[index] = _finite(score, f"the score of result {index}")
    return scores


# -- helpers ----------------------------------------------------------------------------------


async def _whole_reply(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """A non-streamed completion as one event whose choices carry ``delta``-like messages."""
    text = "".join([line async for line in lines])
    try:
        reply = json.loads(text)
    except ValueError:
        yield text
        return
    if isinstance(reply, dict):
        for choice in reply.get("choices") or []:
            if isinstance(choice, dict) and "message" in choice:
                choice["delta"] = choice.pop("message")
    yield json.dumps(reply)


def _model_info(entry: dict[str, Any]) -> ModelInfo:
    name = str(entry.get("id", ""))
    raw_meta = entry.get("meta")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    context = meta.get("n_ctx_train") or entry.get("max_model_len") or entry.get("context_length")
    quant = _QUANT_IN_NAME.search(name.rsplit("/", 1)[-1])
    details = {k: v for k, v in entry.items() if k not in ("id", "object")}
    return ModelInfo(
        name=name,
        parameter_count=meta.get("n_params"),
        quantization=quant.group(1).upper() if quant else None,
        context_length=int(context) if context else None,
        size_bytes=meta.get("size"),
        details=details,
    )


def _same_model(asked: str, listed: str) -> bool:
    if asked == listed:
        return True
    # Ollama's /v1 lists "name:latest"; "name" means the same model.
    return ":" not in asked and listed == f"{asked}:latest"


def _known(model: str, models: list[ModelInfo]) -> bool:
    return any(_same_model(model, m.name) for m in models)


def _message_from_body(body: Any) -> str | None:
    """The engine's message from nested, vLLM-flat or FastAPI error bodies."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if isinstance(error, str):
        return error
    if body.get("object") == "error" and "message" in body:
        return str(body["message"])
    if "detail" in body:
        return str(body["detail"])
    if "message" in body:
        return str(body["message"])
    return None


def _error_message(response: httpx.Response) -> str:
    try:
        message = _message_from_body(response.json())
    except ValueError:
        message = None
    text = (message or response.text or response.reason_phrase).strip()
    # llama-cpp-python appends a Python traceback location; it helps nobody upstream.
    text = re.split(r"\n\s*File \"", text, maxsplit=1)[0].strip()
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "..."


def _rejects_json_schema(message: str) -> bool:
    lowered = message.lower()
    return "json_schema" in lowered or "'text' or 'json_object'" in lowered

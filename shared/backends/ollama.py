"""Ollama's native API through the official ``ollama.AsyncClient``.

The client honours ``OLLAMA_HOST`` when ``backend.base_url`` is unset. Replies always stream
(NDJSON); a JSON schema goes to Ollama as ``format`` and the reply is validated here as well;
``think`` asks reasoning models to return their thinking apart from the answer. Errors of the
client (``ResponseError`` with the HTTP status, or ``-1`` inside a stream; ``ConnectionError``;
raw httpx errors, which the client lets through while streaming) are translated to
``shared.errors`` in ``_translate``. Only failures to connect are retried.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import anyio
import httpx

from ..config import BackendSettings
from ..errors import (
    BackendTimeout,
    BackendUnavailable,
    BadInput,
    LocalMCPError,
    NotFound,
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
from .streaming import ThinkSplitter, within_deadline
from .structured import check_schema, validate_reply

logger = logging.getLogger(__name__)

T = TypeVar("T")

START_HINT = (
    "Start Ollama (`ollama serve`, or the desktop app), or point backend.base_url "
    "(LOCALMCP_BACKEND__BASE_URL) or OLLAMA_HOST at the host:port where it runs."
)

#: how Ollama refuses chat / generate on a model without the completion capability
NO_COMPLETION = ("does not support chat", "does not support generate")


def check_request(model: str, *, empty: str | None = None) -> None:
    """``BadInput`` before a request Ollama would not answer as meant.

    An empty model name (the ollama client would raise a bare pydantic error), or an empty
    conversation / prompt (``empty`` names it): Ollama takes that as "load the model" and
    answers with no text at all.
    """
    if not model.strip():
        raise BadInput(
            "model is empty.", hint="Pass a name such as 'llama3.2:3b' (list_models shows them)."
        )
    if empty is not None:
        raise BadInput(
            f"{empty} is empty; Ollama would only load {model!r} and return no text.",
            hint='Add at least one message, e.g. {"role": "user", "content": "Hello"}.'
            if empty == "messages"
            else "Pass the text to complete.",
            model=model,
        )


def ollama_options(options: GenerationOptions | None) -> dict[str, Any]:
    """Our generation options in Ollama's ``options`` vocabulary."""
    if options is None:
        return {}
    mapped = {
        "temperature": options.temperature,
        "seed": options.seed,
        "top_p": options.top_p,
        "num_predict": options.max_tokens,
        "num_ctx": options.num_ctx,
        "stop": options.stop,
    }
    return {k: v for k, v in mapped.items() if v is not None}


class OllamaBackend(Backend):
    """An Ollama server (``host[:port]``; unset means ``OLLAMA_HOST``, then 127.0.0.1:11434)."""

    kind = "ollama"

    def __init__(
        self,
        host: str | None = None,
        *,
        settings: BackendSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        import ollama

        self.settings = settings or BackendSettings()
        self.default_model = self.settings.model
        self.default_embed_model = self.settings.embed_model
        timeout = httpx.Timeout(
            connect=self.settings.connect_timeout,
            read=self.settings.read_timeout,
            write=self.settings.read_timeout,
            pool=self.settings.connect_timeout,
        )
        extra: dict[str, Any] = {"transport": transport} if transport is not None else {}
        self._client = ollama.AsyncClient(host=host or None, timeout=timeout, **extra)
        http = getattr(self._client, "_client", None)
        self.base_url = str(http.base_url).rstrip("/") if http is not None else str(host)

    # -- error translation ---------------------------------------------------------------

    async def _local_names(self) -> str:
        """The local model names for a "not found" message (best effort)."""
        try:
            response = await self._client.list()
        except Exception:
            return "(could not list them)"
        return ", ".join(m.model or "" for m in response.models) or "(none)"

    async def _translate(self, exc: BaseException, *, model: str | None, what: str) -> NoReturn:
        """Raise the ``shared.errors`` equivalent of an ollama / httpx failure."""
        import ollama

        if isinstance(exc, LocalMCPError):
            raise exc
        if isinstance(exc, ollama.ResponseError):
            status = exc.status_code
            message = exc.error
            if status == 404 and message.strip() == "404 page not found":
                raise UpstreamError(
                    f"{self.base_url} has no Ollama API endpoint for {what} (404 page not found).",
                    hint="Point backend.base_url (LOCALMCP_BACKEND__BASE_URL) or OLLAMA_HOST at "
                    "Ollama's host:port with no path such as /v1; for an OpenAI-compatible "
                    "engine set backend.kind = 'openai'.",
                    model=model,
                    status=status,
                ) from exc
            if status == 404 and model is not None:
                raise NotFound(
                    f"model {model!r} is not available in Ollama at {self.base_url} "
                    f"({message}); local models: {await self._local_names()}.",
                    hint=f"Pull it first (pull_model / `ollama pull {model}`), or pass one of "
                    "the local models.",
                    model=model,
                    status=status,
                ) from exc
            if status == 400 and message.endswith(NO_COMPLETION):
                raise BadInput(
                    f"model {model!r} cannot {what}: Ollama says {message} (it has no "
                    "completion capability; an embedding-only model, for instance).",
                    hint="Use it with embed, or pick a chat model (list_models / show_model "
                    "tell which models have the 'completion' capability).",
                    model=model,
                    status=status,
                ) from exc
            if status == 400 and "does not support" in message:
                raise BadInput(
                    f"Ollama refused the request for {model!r}: {message}.",
                    hint="Leave out the option the model lacks (e.g. think), or use another model.",
                    model=model,
                    status=status,
                ) from exc
            if status == -1:
                hint = "Read Ollama's log (`ollama serve` output); retry, or shorten the prompt."
                if what.startswith("pull"):
                    hint = "Check the model name and tag (ollama.com/library) and the network."
                raise UpstreamError(
                    f"Ollama at {self.base_url} failed during {what}: {message}.",
                    hint=hint,
                    model=model,
                ) from exc
            hint = "Read Ollama's message; fix the request or Ollama's settings."
            if status == 503:
                hint = "Ollama's queue is full; retry in a moment or raise OLLAMA_MAX_QUEUE."
            raise UpstreamError(
                f"Ollama at {self.base_url} answered {status} to {what}: {message}.",
                status=status,
                hint=hint,
                model=model,
            ) from exc
        if isinstance(exc, httpx.ConnectTimeout):
            raise BackendTimeout(
                f"connecting to Ollama at {self.base_url} took longer than "
                f"{self.settings.connect_timeout:g} s.",
                hint="Check Ollama is up, or raise backend.connect_timeout "
                "(LOCALMCP_BACKEND__CONNECT_TIMEOUT).",
            ) from exc
        if isinstance(exc, httpx.TimeoutException):
            raise BackendTimeout(
                f"Ollama at {self.base_url} sent nothing for {self.settings.read_timeout:g} s "
                f"during {what}.",
                hint="Raise backend.read_timeout (LOCALMCP_BACKEND__READ_TIMEOUT); a first "
                "request also waits for the model to load.",
            ) from exc
        if isinstance(exc, ConnectionError | httpx.ConnectError):
            raise BackendUnavailable(
                f"cannot connect to Ollama at {self.base_url}.", hint=START_HINT
            ) from exc
        if isinstance(exc, httpx.HTTPError):
            raise BackendUnavailable(
                f"the connection to Ollama at {self.base_url} failed during {what}: "
                f"{type(exc).__name__}: {exc}.",
                hint="Check Ollama's log; it may have crashed or been restarted.",
            ) from exc
        raise exc

    def _timeout_error(self) -> BackendTimeout:
        return BackendTimeout(
            f"the generation took longer than {self.settings.generation_timeout:g} s "
            f"(Ollama at {self.base_url}).",
            hint="Raise backend.generation_timeout (LOCALMCP_BACKEND__GENERATION_TIMEOUT) or ask "
            "for fewer tokens (max_tokens).",
        )

    @staticmethod
    def _is_connect_error(exc: BaseException) -> bool:
        return isinstance(exc, ConnectionError | httpx.ConnectError | httpx.ConnectTimeout)

    async def _call(
        self, fn: Callable[[], Awaitable[T]], *, model: str | None = None, what: str
    ) -> T:
        """Await ``fn()``, retrying failures to connect; translate every failure."""
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            try:
                return await fn()
            except Exception as exc:
                if self._is_connect_error(exc) and attempt + 1 < attempts:
                    await self._pause(attempt, attempts)
                    continue
                await self._translate(exc, model=model, what=what)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _pause(self, attempt: int, attempts: int) -> None:
        delay = min(0.2 * 2**attempt, 2.0)
        logger.info(
            "cannot connect to Ollama at %s; retry %d/%d in %.1f s",
            self.base_url,
            attempt + 1,
            attempts - 1,
            delay,
        )
        await anyio.sleep(delay)

    async def _stream(
        self,
        open_stream: Callable[[], Awaitable[AsyncIterator[Any]]],
        *,
        model: str | None,
        what: str,
    ) -> AsyncIterator[Any]:
        """Yield the parts of an Ollama stream; reconnect only while nothing was received."""
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            stream = await open_stream()
            started = False
            try:
                async for part in stream:
                    started = True
                    yield part
                return
            except Exception as exc:
                if not started and self._is_connect_error(exc) and attempt + 1 < attempts:
                    await self._pause(attempt, attempts)
                    continue
                await self._translate(exc, model=model, what=what)
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    with anyio.move_on_after(5, shield=True):
                        await aclose()

    # -- models --------------------------------------------------------------------------

    async def list_models(self) -> list[ModelInfo]:
        """Local models (``/api/tags``)."""
        response = await self._call(self._client.list, what="list models")
        models = []
        for entry in response.models:
            details = entry.details
            models.append(
                ModelInfo(
                    name=entry.model or "",
                    family=details.family if details else None,
                    parameter_size=details.parameter_size if details else None,
                    quantization=details.quantization_level if details else None,
                    size_bytes=int(entry.size) if entry.size is not None else None,
                    modified_at=entry.modified_at,
                    details={"digest": entry.digest, "format": details.format if details else None},
                )
            )
        logger.info("listed %d models at %s", len(models), self.base_url)
        return models

    async def show_model(self, model: str) -> ModelInfo:
        """Details of one model (``/api/show``), architecture facts in ``details['model_info']``."""
        check_request(model)
        response = await self._call(
            lambda: self._client.show(model), model=model, what=f"show {model!r}"
        )
        info = dict(response.modelinfo or {})
        arch = info.get("general.architecture")
        details = response.details
        context = info.get(f"{arch}.context_length") if arch else None
        count = info.get("general.parameter_count")
        return ModelInfo(
            name=model,
            family=(details.family if details else None) or arch,
            parameter_size=details.parameter_size if details else None,
            parameter_count=int(count) if count is not None else None,
            quantization=details.quantization_level if details else None,
            context_length=int(context) if context is not None else None,
            modified_at=response.modified_at,
            capabilities=list(response.capabilities or []),
            details={
                "architecture": arch,
                "model_info": info,
                "format": details.format if details else None,
                "families": list(details.families or []) if details else [],
                "parameters": response.parameters,
            },
        )

    async def loaded_models(self) -> list[LoadedModel]:
        """Models in memory (``/api/ps``) with their RAM / VRAM use and expiry."""
        response = await self._call(self._client.ps, what="list loaded models")
        return [
            LoadedModel(
                name=entry.model or entry.name or "",
                size_bytes=int(entry.size) if entry.size is not None else None,
                vram_bytes=int(entry.size_vram) if entry.size_vram is not None else None,
                expires_at=entry.expires_at,
                context_length=entry.context_length,
            )
            for entry in response.models
        ]

    async def pull(self, model: str) -> AsyncIterator[PullProgress]:
        """Download ``model`` (``/api/pull``), yielding Ollama's progress steps."""
        check_request(model)
        logger.info("pulling %s into Ollama at %s", model, self.base_url)

        async def open_stream() -> AsyncIterator[Any]:
            return await self._client.pull(model, stream=True)

        async for part in self._stream(open_stream, model=None, what=f"pull {model!r}"):
            yield PullProgress(
                status=part.status or "",
                digest=part.digest,
                completed=part.completed,
                total=part.total,
            )

    # -- generation ----------------------------------------------------------------------

    async def _generation(
        self,
        open_stream: Callable[[], Awaitable[AsyncIterator[Any]]],
        *,
        model: str,
        what: str,
        json_schema: dict[str, Any] | None,
        text_of: Callable[[Any], tuple[str, str]],
    ) -> AsyncIterator[ChatChunk]:
        """Turn an Ollama chat / generate stream into ``ChatChunk``s, bounded in time."""
        deadline = anyio.current_time() + self.settings.generation_timeout
        splitter = ThinkSplitter()
        answer: list[str] = []
        last: Any = None
        logger.info("%s model=%s at %s", what, model, self.base_url)
        parts = within_deadline(
            self._stream(open_stream, model=model, what=what), deadline, self._timeout_error
        )
        async for part in parts:
            reasoning, text = text_of(part)
            thinking, content = splitter.feed(text)
            thinking = reasoning + thinking
            if part.done:
                last = part
            if content or thinking:
                answer.append(content)
                yield ChatChunk(content=content, thinking=thinking)
        thinking, content = splitter.flush()
        answer.append(content)
        parsed = None
        if json_schema is not None:
            parsed = validate_reply("".join(answer), json_schema, model=model)
        yield ChatChunk(
            content=content,
            thinking=thinking,
            done=True,
            finish_reason=getattr(last, "done_reason", None),
            prompt_tokens=getattr(last, "prompt_eval_count", None),
            completion_tokens=getattr(last, "eval_count", None),
            parsed=parsed,
        )

    async def chat_stream(
        self,
        model: str,
        messages: list[ChatMessage],
        options: GenerationOptions | None = None,
        json_schema: dict[str, Any] | None = None,
        think: bool | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """Stream ``/api/chat``."""
        check_request(model, empty=None if messages else "messages")
        schema = check_schema(json_schema) if json_schema is not None else None
        payload = [m.model_dump() for m in messages]

        async def open_stream() -> AsyncIterator[Any]:
            return await self._client.chat(
                model,
                payload,
                stream=True,
                think=think,
                format=schema,
                options=ollama_options(options) or None,
            )

        def text_of(part: Any) -> tuple[str, str]:
            message = part.message
            return message.thinking or "", message.content or ""

        async for chunk in self._generation(
            open_stream, model=model, what="chat", json_schema=schema, text_of=text_of
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
        """Stream ``/api/generate`` (the model's template applied, ``system`` included)."""
        check_request(model, empty=None if prompt else "prompt")
        schema = check_schema(json_schema) if json_schema is not None else None

        async def open_stream() -> AsyncIterator[Any]:
            return await self._client.generate(
                model,
                prompt,
                system=system or "",
                stream=True,
                think=think,
                format=schema,
                options=ollama_options(options) or None,
            )

        def text_of(part: Any) -> tuple[str, str]:
            return part.thinking or "", part.response or ""

        async for chunk in self._generation(
            open_stream, model=model, what="generate", json_schema=schema, text_of=text_of
        ):
            yield chunk

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """One vector per text (``/api/embed``; Ollama pools and normalises)."""
        return (await self.embed_batch(model, texts)).vectors

    async def embed_batch(self, model: str, texts: list[str]) -> Embeddings:
        """``/api/embed`` for a batch of texts."""
        check_request(model)
        if not texts:
            return Embeddings(model=model, vectors=[])
        logger.info("embed model=%s texts=%d at %s", model, len(texts), self.base_url)

        async def call() -> Any:
            with anyio.fail_after(self.settings.generation_timeout):
                return await self._client.embed(model, texts)

        try:
            response = await self._call(call, model=model, what="embed")
        except TimeoutError:
            raise self._timeout_error() from None
        vectors = [list(v) for v in response.embeddings]
        if len(vectors) != len(texts):
            raise UpstreamError(
                f"Ollama returned {len(vectors)} embeddings for {len(texts)} texts.",
                hint="Check the model is an embedding model.",
                model=model,
            )
        return Embeddings(model=model, vectors=vectors)

    async def aclose(self) -> None:
        """Close the client's connection pool."""
        await self._client.close()

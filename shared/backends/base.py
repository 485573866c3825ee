"""The engine interface every backend implements, and the types it speaks.

Two implementations: ``ollama.py`` (native API through the official AsyncClient) and
``openai_compat.py`` (any OpenAI-compatible engine through httpx). Callers depend only on
``Backend`` and these models; engine-specific errors are translated to ``shared.errors``
inside each implementation.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Role = Literal["system", "user", "assistant", "tool"]


class ChatMessage(BaseModel):
    """One message of a conversation."""

    role: Role = Field(description="Who speaks: system, user, assistant or tool.")
    content: str = Field(description="The message text.")


class GenerationOptions(BaseModel):
    """Sampling and runtime options common to the engines."""

    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    seed: int | None = Field(None, description="Random seed for reproducible sampling.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int | None = Field(None, gt=0, description="Most tokens to generate.")
    num_ctx: int | None = Field(
        None, gt=0, description="Context window in tokens (Ollama only; others fix it at start)."
    )
    stop: list[str] | None = Field(None, description="Stop sequences.")


class ModelInfo(BaseModel):
    """What an engine says about one model; absent facts stay None."""

    name: str
    family: str | None = None
    parameter_size: str | None = None
    parameter_count: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    size_bytes: int | None = None
    modified_at: datetime | None = None
    capabilities: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


class LoadedModel(BaseModel):
    """A model resident in the engine's memory."""

    name: str
    size_bytes: int | None = None
    vram_bytes: int | None = None
    expires_at: datetime | None = None
    context_length: int | None = None


class PullProgress(BaseModel):
    """One progress step of a model download."""

    status: str
    digest: str | None = None
    completed: int | None = None
    total: int | None = None


class ChatChunk(BaseModel):
    """A streamed piece of a reply; the last one has ``done`` and the usage figures."""

    content: str = ""
    thinking: str = ""
    done: bool = False
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: on the final chunk of a reply asked for with a JSON schema: the validated value
    parsed: Any = None


class ChatResult(BaseModel):
    """A whole reply."""

    model: str
    content: str
    thinking: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float | None = None
    #: the validated JSON value when a schema was requested
    parsed: Any = None


class Embeddings(BaseModel):
    """Vectors for a batch of texts and how they were made."""

    model: str
    vectors: list[list[float]]
    #: "engine" (the engine pooled them) or "mean" (per-token vectors pooled here)
    pooling: str = "engine"

    @property
    def dimension(self) -> int:
        """Length of each vector (0 for an empty batch)."""
        return len(self.vectors[0]) if self.vectors else 0


class Backend(abc.ABC):
    """One inference engine. All methods are async and honour cancellation."""

    #: "ollama" or "openai"
    kind: str
    #: where the engine listens, for messages and logs
    base_url: str
    #: model used when a call names none (``backend.model``); else the engine's first
    default_model: str | None = None
    #: embedding model used when a call names none (``backend.embed_model``)
    default_embed_model: str | None = None

    @abc.abstractmethod
    async def list_models(self) -> list[ModelInfo]:
        """Models the engine can serve."""

    @abc.abstractmethod
    async def show_model(self, model: str) -> ModelInfo:
        """Details of one model; ``NotFound`` when the engine does not know it."""

    @abc.abstractmethod
    async def loaded_models(self) -> list[LoadedModel]:
        """Models in memory now (empty where the engine cannot tell)."""

    @abc.abstractmethod
    def pull(self, model: str) -> AsyncIterator[PullProgress]:
        """Download a model, yielding progress; ``Unsupported`` where the engine cannot."""

    @abc.abstractmethod
    def chat_stream(
        self,
        model: str,
        messages: list[ChatMessage],
        options: GenerationOptions | None = None,
        json_schema: dict[str, Any] | None = None,
        think: bool | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """Stream a chat reply chunk by chunk."""

    @abc.abstractmethod
    def generate_stream(
        self,
        model: str,
        prompt: str,
        system: str | None = None,
        options: GenerationOptions | None = None,
        json_schema: dict[str, Any] | None = None,
        think: bool | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """Stream a raw completion of ``prompt``."""

    @abc.abstractmethod
    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """One vector per input text, in order."""

    async def embed_batch(self, model: str, texts: list[str]) -> Embeddings:
        """Like ``embed`` but also says how the vectors were pooled."""
        return Embeddings(model=model, vectors=await self.embed(model, texts))

    async def chat(
        self,
        model: str,
        messages: list[ChatMessage],
        options: GenerationOptions | None = None,
        json_schema: dict[str, Any] | None = None,
        think: bool | None = None,
    ) -> ChatResult:
        """The whole reply of ``chat_stream`` at once."""
        return await collect(
            model, self.chat_stream(model, messages, options, json_schema=json_schema, think=think)
        )

    async def resolve_model(self, model: str | None, *, purpose: str = "chat") -> str:
        """The model to use: the one asked for, else the configured default, else the first."""
        from ..errors import NotFound

        if model:
            return model
        configured = self.default_embed_model if purpose == "embed" else None
        configured = configured or self.default_model
        if configured:
            return configured
        models = await self.list_models()
        if not models:
            raise NotFound(
                f"the {self.kind} engine at {self.base_url} has no models.",
                hint="Pull or load a model in the engine (Ollama: pull_model), then retry.",
            )
        return models[0].name

    async def rerank(self, model: str, query: str, documents: list[str]) -> list[float]:
        """Relevance score per document; engines without a rerank endpoint refuse."""
        from ..errors import Unsupported

        raise Unsupported(
            f"the {self.kind} engine at {self.base_url} has no rerank endpoint.",
            hint="Unset kb.rerank_model, or point the backend at llama.cpp or vLLM /v1/rerank.",
        )

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Release connections."""


async def collect(model: str, stream: AsyncIterator[ChatChunk]) -> ChatResult:
    """Gather a stream of chunks into one ``ChatResult``; the stream is closed either way."""
    import time

    started = time.monotonic()
    content: list[str] = []
    thinking: list[str] = []
    last = ChatChunk()
    try:
        async for chunk in stream:
            content.append(chunk.content)
            thinking.append(chunk.thinking)
            if chunk.done:
                last = chunk
    finally:
        await aclose_stream(stream)
    return ChatResult(
        model=model,
        content="".join(content),
        thinking="".join(thinking) or None,
        finish_reason=last.finish_reason,
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        seconds=round(time.monotonic() - started, 3),
        parsed=last.parsed,
    )


async def aclose_stream(stream: AsyncIterator[Any]) -> None:
    """Close an async generator (and the HTTP stream behind it) if it can be closed."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()

"""Typed inputs and results of the inference tools (their JSON schemas are the tools' schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

ROLES = ("system", "user", "assistant", "tool")


class MessageIn(BaseModel):
    """One conversation message as a client sends it."""

    role: str = Field(
        description="Who speaks: 'system', 'user', 'assistant' or 'tool'.",
        json_schema_extra={"enum": list(ROLES)},
    )
    content: str = Field(description="The message text.")


class ModelSummary(BaseModel):
    """One model the engine can serve."""

    name: str = Field(description="Pass this as `model` to the other tools.")
    family: str | None = Field(None, description="Architecture family, e.g. llama, qwen2.")
    parameter_size: str | None = Field(None, description="Size as the engine says, e.g. '7.6B'.")
    quantization: str | None = Field(None, description="Weight quantisation, e.g. Q4_K_M.")
    context_length: int | None = Field(None, description="Longest context the model supports.")
    size_gb: float | None = Field(None, description="Size on disk in GiB.")
    modified_at: datetime | None = Field(None, description="When the model was last changed.")


class ModelList(BaseModel):
    """The models of the connected engine."""

    engine: str = Field(description="'ollama' or 'openai' (OpenAI-compatible).")
    base_url: str = Field(description="Where the engine listens.")
    default_model: str | None = Field(description="Model used when a call names none.")
    models: list[ModelSummary]


class ModelDetails(BaseModel):
    """What the engine reports about one model."""

    name: str
    family: str | None = Field(None, description="Architecture family.")
    parameter_size: str | None = Field(None, description="Size as the engine says, e.g. '32.8B'.")
    parameter_count: int | None = Field(None, description="Exact number of parameters.")
    quantization: str | None = Field(None, description="Weight quantisation, e.g. Q4_K_M.")
    context_length: int | None = Field(None, description="Longest context the model supports.")
    size_gb: float | None = Field(None, description="Size in GiB, where reported.")
    capabilities: list[str] = Field(
        default_factory=list, description="E.g. completion, tools, thinking, embedding, vision."
    )
    architecture: dict[str, Any] = Field(
        default_factory=dict,
        description="Layers, heads, KV heads, embedding length where the engine reports them.",
    )


class LoadedEntry(BaseModel):
    """A model resident in memory."""

    name: str
    size_gb: float | None = Field(None, description="Memory in use in GiB (RAM + VRAM).")
    vram_gb: float | None = Field(None, description="Part of it on the GPU, in GiB.")
    gpu_percent: float | None = Field(None, description="Share of the model held on the GPU.")
    expires_at: datetime | None = Field(None, description="When it will be unloaded if idle.")
    context_length: int | None = Field(None, description="Context it was loaded with.")


class LoadedModels(BaseModel):
    """Models in the engine's memory now."""

    engine: str
    models: list[LoadedEntry]
    note: str | None = Field(None, description="What this engine can and cannot report.")


class PullResult(BaseModel):
    """Outcome of a model download."""

    model: str
    status: str = Field(description="Ollama's last status line, 'success' when done.")
    total_bytes: int | None = Field(None, description="Bytes of the largest layer downloaded.")
    steps: int = Field(description="Progress messages received.")


class ChatAnswer(BaseModel):
    """A model's reply."""

    model: str = Field(description="The model that answered.")
    content: str = Field(description="The answer text (without the reasoning).")
    thinking: str | None = Field(None, description="The model's reasoning, apart from the answer.")
    parsed: Any = Field(
        None, description="With json_schema: the answer parsed as JSON, validated against it."
    )
    finish_reason: str | None = Field(
        None, description="'stop' (finished), 'length' (hit max_tokens), ..."
    )
    prompt_tokens: int | None = Field(None, description="Prompt tokens, where reported.")
    completion_tokens: int | None = Field(None, description="Generated tokens, where reported.")
    streamed_chunks: int = Field(description="Chunks received while streaming (~tokens).")
    seconds: float = Field(description="Wall time of the generation.")


class EmbedResult(BaseModel):
    """Vectors for a batch of texts."""

    model: str
    dimension: int = Field(description="Length of each vector.")
    count: int = Field(description="Number of vectors (one per input text, same order).")
    pooling: str = Field(
        description="'engine' (pooled by the engine) or 'mean' (per-token vectors averaged and "
        "L2-normalised here)."
    )
    vectors: list[list[float]]

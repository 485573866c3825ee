"""The inference tools' logic, free of MCP: engine calls, streaming with progress, fit_model.

The engine is connected on first use (``InferenceService.backend``), so a server starts and
lists its tools with no engine running. Generations always stream from the engine; the caller
gets progress callbacks as text arrives (batched: every ``inference.progress_every_tokens``
chunks or once a second, whichever comes first) and a heartbeat while the engine is silent,
e.g. during a long prompt evaluation, so a client's idle timer does not give up early.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
from pydantic import ValidationError

from localmcp.shared.backends import (
    Backend,
    ChatChunk,
    GenerationOptions,
    aclose_stream,
    connect_backend,
)
from localmcp.shared.config import BackendSettings, Settings
from localmcp.shared.errors import BackendError, BadInput, NotFound, Unsupported

from . import fit as fitting
from .inputs import build_messages, check_prompt, check_texts, clean_text
from .models import (
    ChatAnswer,
    EmbedResult,
    LoadedEntry,
    LoadedModels,
    MessageIn,
    ModelDetails,
    ModelList,
    ModelSummary,
    PullResult,
)

logger = logging.getLogger(__name__)

#: ``await progress(done, total, message)``
ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]
Connect = Callable[[BackendSettings], Awaitable[Backend]]

HEARTBEAT_S = 5.0
FLUSH_EVERY_S = 1.0
PULL_EVERY_S = 0.25
DEFAULT_CONTEXT = 8192
DEFAULT_QUANT = "Q4_K_M"
ARCH_KEYS = (
    "block_count",
    "attention.head_count",
    "attention.head_count_kv",
    "embedding_length",
    "context_length",
)


async def _no_progress(done: float, total: float | None, message: str | None) -> None:
    return None


def _gib(value: int | None) -> float | None:
    return None if value is None else round(value / 1024**3, 2)


def generation_options(**values: Any) -> GenerationOptions:
    """``GenerationOptions`` from tool arguments; ``BadInput`` naming the bad one."""
    try:
        return GenerationOptions(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise BadInput(
            f"invalid generation options: {problems}.", hint="Fix those values."
        ) from exc


class InferenceService:
    """One engine connection and the operations the inference tools offer."""

    def __init__(
        self,
        settings: Settings,
        *,
        connect: Connect | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.settings = settings
        self._connect: Connect = connect or connect_backend
        self._backend: Backend | None = None
        self._lock: anyio.Lock | None = None
        self._heartbeat_s = heartbeat_s

    async def backend(self) -> Backend:
        """The engine connection, made on first use."""
        if self._backend is not None:
            return self._backend
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._backend is None:
                backend = await self._connect(self.settings.backend)
                logger.info("using the %s engine at %s", backend.kind, backend.base_url)
                self._backend = backend
            return self._backend

    async def aclose(self) -> None:
        """Close the engine connection; the next call reconnects."""
        backend, self._backend = self._backend, None
        if backend is not None:
            await backend.aclose()

    # -- models --------------------------------------------------------------------------

    async def list_models(self) -> ModelList:
        """The models the engine can serve."""
        backend = await self.backend()
        models = await backend.list_models()
        return ModelList(
            engine=backend.kind,
            base_url=backend.base_url,
            default_model=backend.default_model or (models[0].name if models else None),
            models=[
                ModelSummary(
                    name=m.name,
                    family=m.family,
                    parameter_size=m.parameter_size,
                    quantization=m.quantization,
                    context_length=m.context_length,
                    size_gb=_gib(m.size_bytes),
                    modified_at=m.modified_at,
                )
                for m in models
            ],
        )

    async def show_model(self, model: str) -> ModelDetails:
        """What the engine reports about ``model``."""
        backend = await self.backend()
        info = await backend.show_model(clean_text(model))
        architecture: dict[str, Any] = {}
        model_info = info.details.get("model_info")
        if isinstance(model_info, dict):
            arch = model_info.get("general.architecture")
            for key in ARCH_KEYS:
                value = model_info.get(f"{arch}.{key}")
                if value is not None:
                    architecture[key.replace("attention.", "")] = value
        meta = info.details.get("meta")
        if isinstance(meta, dict):
            architecture.update({k: v for k, v in meta.items() if isinstance(v, int | float)})
        return ModelDetails(
            name=info.name,
            family=info.family,
            parameter_size=info.parameter_size,
            parameter_count=info.parameter_count,
            quantization=info.quantization,
            context_length=info.context_length,
            size_gb=_gib(info.size_bytes),
            capabilities=info.capabilities,
            architecture=architecture,
        )

    async def loaded_models(self) -> LoadedModels:
        """Models in the engine's memory, with RAM / VRAM use where reported."""
        backend = await self.backend()
        loaded = await backend.loaded_models()
        entries = []
        for m in loaded:
            share = None
            if m.size_bytes and m.vram_bytes is not None:
                share = round(100 * m.vram_bytes / m.size_bytes, 1)
            entries.append(
                LoadedEntry(
                    name=m.name,
                    size_gb=_gib(m.size_bytes),
                    vram_gb=_gib(m.vram_bytes),
                    gpu_percent=share,
                    expires_at=m.expires_at,
                    context_length=m.context_length,
                )
            )
        note = None
        if backend.kind != "ollama":
            note = (
                "OpenAI-compatible engines do not report memory use; listed are the models a "
                "single-model server (llama.cpp, vLLM, TensorRT-LLM) is serving."
            )
        return LoadedModels(engine=backend.kind, models=entries, note=note)

    async def pull_model(self, model: str, progress: ProgressFn = _no_progress) -> PullResult:
        """Download ``model`` into the engine (Ollama), reporting each step."""
        model = clean_text(model).strip()
        if not model:
            raise BadInput("model is empty.", hint="Pass a name such as 'llama3.2:3b'.")
        backend = await self.backend()
        steps = 0
        status = ""
        largest: int | None = None
        last_sent = 0.0
        last_status = ""
        stream = backend.pull(model)
        try:
            async for step in stream:
                steps += 1
                status = step.status
                if step.total:
                    largest = max(largest or 0, step.total)
                now = time.monotonic()
                layer_done = bool(step.total) and step.completed == step.total
                changed = status != last_status or layer_done
                if changed or now - last_sent >= PULL_EVERY_S:
                    message = status
                    if step.total and step.completed is not None:
                        message += f" {100 * step.completed / step.total:.0f}%"
                    await progress(steps, None, message)
                    last_sent, last_status = now, status
        finally:
            await aclose_stream(stream)
        return PullResult(model=model, status=status, total_bytes=largest, steps=steps)

    # -- generation ----------------------------------------------------------------------

    async def chat(
        self,
        *,
        messages: Sequence[MessageIn] | None = None,
        prompt: str | None = None,
        system: str | None = None,
        model: str | None = None,
        options: GenerationOptions | None = None,
        json_schema: dict[str, Any] | None = None,
        think: bool | None = None,
        progress: ProgressFn = _no_progress,
    ) -> ChatAnswer:
        """Answer a conversation (or one prompt), streaming progress."""
        conversation = build_messages(
            messages, prompt, system, max_chars=self.settings.inference.max_prompt_chars
        )
        backend = await self.backend()
        name = await backend.resolve_model(clean_text(model) if model else None)
        stream = backend.chat_stream(
            name, conversation, options, json_schema=json_schema, think=think
        )
        return await self._consume(name, stream, options, progress)

    async def generate(
        self,
        *,
        prompt: str,
        system: str | None = None,
        model: str | None = None,
        options: GenerationOptions | None = None,
        json_schema: dict[str, Any] | None = None,
        think: bool | None = None,
        progress: ProgressFn = _no_progress,
    ) -> ChatAnswer:
        """Complete ``prompt`` with the engine's completion endpoint, streaming progress."""
        prompt, system = check_prompt(
            prompt, system, max_chars=self.settings.inference.max_prompt_chars
        )
        backend = await self.backend()
        name = await backend.resolve_model(clean_text(model) if model else None)
        stream = backend.generate_stream(
            name, prompt, system, options, json_schema=json_schema, think=think
        )
        return await self._consume(name, stream, options, progress)

    async def _consume(
        self,
        model: str,
        stream: AsyncIterator[ChatChunk],
        options: GenerationOptions | None,
        progress: ProgressFn,
    ) -> ChatAnswer:
        """Drain a reply stream, sending batched progress and heartbeats while it runs."""
        started = time.monotonic()
        total = float(options.max_tokens) if options and options.max_tokens else None
        every = self.settings.inference.progress_every_tokens
        send, receive = anyio.create_memory_object_stream[ChatChunk | Exception](64)
        content: list[str] = []
        thinking: list[str] = []
        last = ChatChunk()
        chunks = 0
        pending: list[str] = []
        pending_chunks = 0
        last_flush = started
        failure: Exception | None = None
        reported = -1.0

        async def report(done: float, message: str | None) -> None:
            # MCP asks for strictly increasing progress; a heartbeat (no new chunk) or a final
            # flush at the same count moves it on by a thousandth.
            nonlocal reported
            reported = max(done, reported + 0.001)
            await progress(reported, total, message)

        async def pump() -> None:
            try:
                async with send:
                    try:
                        async for chunk in stream:
                            await send.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        return  # the reader stopped first
                    except Exception as exc:
                        with contextlib.suppress(anyio.BrokenResourceError):
                            await send.send(exc)
            finally:
                await aclose_stream(stream)

        async def flush() -> None:
            nonlocal pending, pending_chunks, last_flush
            text = "".join(pending)
            pending, pending_chunks, last_flush = [], 0, time.monotonic()
            done = float(chunks) if total is None else min(float(chunks), total)
            await report(done, text or None)

        # Errors are carried out of the task group by hand: raised inside it, they would
        # arrive wrapped in an ExceptionGroup.
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            try:
                async with receive:
                    while True:
                        item: ChatChunk | Exception | None = None
                        with anyio.move_on_after(self._heartbeat_s):
                            try:
                                item = await receive.receive()
                            except anyio.EndOfStream:
                                break
                        if item is None:
                            await report(float(chunks), None)  # heartbeat
                            continue
                        if isinstance(item, Exception):
                            raise item
                        if item.content or item.thinking:
                            chunks += 1
                            pending_chunks += 1
                        content.append(item.content)
                        thinking.append(item.thinking)
                        pending.append(item.content)
                        if item.done:
                            last = item
                        now = time.monotonic()
                        due = pending_chunks >= every or now - last_flush >= FLUSH_EVERY_S
                        if (chunks == 1 and pending_chunks == 1) or due:
                            await flush()
            except Exception as exc:
                failure = exc
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if pending_chunks or "".join(pending):
            await flush()
        return ChatAnswer(
            model=model,
            content="".join(content),
            thinking="".join(thinking) or None,
            parsed=last.parsed,
            finish_reason=last.finish_reason,
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            streamed_chunks=chunks,
            seconds=round(time.monotonic() - started, 3),
        )

    # -- embeddings ----------------------------------------------------------------------

    async def embed(self, texts: Sequence[str], model: str | None = None) -> EmbedResult:
        """One vector per text, in order."""
        cleaned = check_texts(texts, max_chars=self.settings.inference.max_prompt_chars)
        backend = await self.backend()
        name = await backend.resolve_model(clean_text(model) if model else None, purpose="embed")
        result = await backend.embed_batch(name, cleaned)
        return EmbedResult(
            model=name,
            dimension=result.dimension,
            count=len(result.vectors),
            pooling=result.pooling,
            vectors=result.vectors,
        )

    # -- fit -----------------------------------------------------------------------------

    async def fit_model(
        self,
        *,
        model: str | None = None,
        quantization: str | None = None,
        context: int | None = None,
        kv_cache: str = "f16",
        gpu_memory_gb: float | None = None,
        gpu_index: int = 0,
        parameters_billions: float | None = None,
        layers: int | None = None,
        kv_heads: int | None = None,
        head_dim: int | None = None,
    ) -> fitting.FitReport:
        """Will ``model`` at ``quantization`` with ``context`` tokens fit the GPU?"""
        numbers = {
            "gpu_memory_gb": gpu_memory_gb,
            "parameters_billions": parameters_billions,
            "context": context,
            "layers": layers,
            "kv_heads": kv_heads,
            "head_dim": head_dim,
        }
        for name, value in numbers.items():
            fitting.check_argument(name, value)
        model = clean_text(model).strip() if model else None
        sources: dict[str, str] = {}
        notes: list[str] = []
        arch = fitting.Architecture()
        engine_quant: str | None = None

        def take(facts: fitting.Architecture, label: str) -> None:
            nonlocal arch
            for key, value in facts.__dict__.items():
                if value is not None:
                    sources[key] = label
            arch = fitting.merge(arch, facts)

        if model:
            known = fitting.find_known(model)
            if known is not None:
                take(known[1], known[2])
            engine_facts, engine_quant, note = await self._engine_facts(model)
            if engine_facts is not None:
                take(engine_facts, "engine")
            if note:
                notes.append(note)
        explicit = fitting.Architecture(
            parameters=int(parameters_billions * 1e9) if parameters_billions else None,
            layers=layers,
            kv_heads=kv_heads,
            head_dim=head_dim,
        )
        take(explicit, "argument")
        if model and not sources:
            raise NotFound(
                f"no architecture facts for {model!r}: the engine does not describe it and the "
                "built-in table has no such family.",
                hint="Pass parameters_billions, layers, kv_heads and head_dim (from the model's "
                "config.json), or a known name such as qwen2.5:32b or llama3.1:8b.",
            )

        if quantization:
            quant = quantization
            sources["quantization"] = "argument"
        elif engine_quant:
            quant = engine_quant
            sources["quantization"] = "engine"
        elif model and fitting.quantization_in_name(model):
            quant = fitting.quantization_in_name(model) or DEFAULT_QUANT
            sources["quantization"] = "model name"
        else:
            quant = DEFAULT_QUANT
            notes.append(f"quantization not given: assumed {DEFAULT_QUANT} (Ollama's default)")
        if context is None:
            context = DEFAULT_CONTEXT
            notes.append(f"context not given: assumed {DEFAULT_CONTEXT} tokens")
        if arch.context_length and context > arch.context_length:
            notes.append(
                f"context {context} exceeds the model's trained context {arch.context_length}"
            )

        gpu = await self._gpu(gpu_memory_gb, gpu_index)
        return fitting.fit(
            arch,
            quantization=quant,
            context=context,
            kv_cache=kv_cache,
            gpu=gpu,
            model=model,
            sources=sources,
            assumptions=notes,
        )

    async def _engine_facts(
        self, model: str
    ) -> tuple[fitting.Architecture | None, str | None, str | None]:
        """Architecture and quantisation from the engine, or a note saying why not."""
        try:
            backend = await self.backend()
            info = await backend.show_model(model)
        except NotFound:
            return None, None, f"the engine does not have {model!r}; figures from elsewhere"
        except (BackendError, Unsupported) as exc:
            return None, None, f"engine not asked ({type(exc).__name__}: {exc.message})"
        model_info = info.details.get("model_info")
        if isinstance(model_info, dict):
            facts = fitting.architecture_from_model_info(model_info, info.parameter_count)
        else:
            meta = info.details.get("meta") if isinstance(info.details.get("meta"), dict) else {}
            facts = fitting.Architecture(
                parameters=info.parameter_count,
                hidden_size=meta.get("n_embd"),
                vocab_size=meta.get("n_vocab"),
                context_length=info.context_length,
            )
        return facts, info.quantization, None

    async def _gpu(self, gpu_memory_gb: float | None, gpu_index: int) -> fitting.GpuMemory:
        if gpu_memory_gb is not None:  # checked with the other numbers in fit_model
            size = int(gpu_memory_gb * fitting.GIB)
            return fitting.GpuMemory(size, None, "gpu_memory_gb argument")
        measured = await anyio.to_thread.run_sync(fitting.nvml_memory, gpu_index)
        if measured is not None:
            return measured
        default = self.settings.inference.default_gpu_memory_gb
        if default is not None:
            setting = "inference.default_gpu_memory_gb"
            fitting.check_argument("gpu_memory_gb", default, source=f"the {setting} setting")
            size = int(default * fitting.GIB)
            return fitting.GpuMemory(size, None, "inference.default_gpu_memory_gb setting")
        raise BadInput(
            "no GPU memory figure: nvidia-ml-py found no NVIDIA GPU here (or is not installed).",
            hint="Pass gpu_memory_gb (e.g. 24), set inference.default_gpu_memory_gb "
            "(LOCALMCP_INFERENCE__DEFAULT_GPU_MEMORY_GB), or install the 'gpu' extra "
            "(pip install 'localmcp[gpu]') on a machine with an NVIDIA driver.",
        )

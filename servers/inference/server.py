"""The inference MCP server: local models through Ollama or any OpenAI-compatible engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from localmcp.shared.config import Settings
from localmcp.shared.server import (
    Context,
    MCPServer,
    ProgressReporter,
    ToolAnnotations,
    create_server,
    tool_errors,
)

from .fit import LIMITS, FitReport
from .models import (
    ChatAnswer,
    EmbedResult,
    LoadedModels,
    MessageIn,
    ModelDetails,
    ModelList,
    PullResult,
)

if TYPE_CHECKING:
    from .service import InferenceService

VERSION = "0.1.0"

INSTRUCTIONS = """\
Local language models on this machine's engine (Ollama, llama.cpp, vLLM, LM Studio, ...).
Start with list_models to see what can be used; pass one of its names as `model`, or omit
`model` for the default. chat answers a conversation or a single prompt; generate completes a
prompt; both stream and report progress. Pass json_schema to get JSON that is validated and
returned parsed. embed turns texts into vectors. fit_model says whether a model, quantisation
and context fit the GPU before you pull or load it. pull_model downloads (Ollama only)."""

ModelArg = Annotated[
    str | None,
    Field(description="Model name from list_models; omit to use the configured default."),
]
SystemArg = Annotated[
    str | None, Field(description="System prompt: instructions that frame the whole answer.")
]
TemperatureArg = Annotated[
    float | None,
    Field(ge=0, le=2, description="Randomness, 0 (deterministic) to 2; engine default if unset."),
]
SeedArg = Annotated[int | None, Field(description="Random seed for a reproducible answer.")]
TopPArg = Annotated[float | None, Field(gt=0, le=1, description="Nucleus sampling mass, e.g. 0.9.")]
NumCtxArg = Annotated[
    int | None,
    Field(
        gt=0,
        description="Context window in tokens (Ollama loads the model with it; other engines "
        "fix the context when started and ignore this).",
    ),
]
MaxTokensArg = Annotated[
    int | None,
    Field(gt=0, description="Most tokens to generate; the answer stops there (finish 'length')."),
]
StopArg = Annotated[list[str] | None, Field(description="Strings at which the answer stops.")]
SchemaArg = Annotated[
    dict[str, Any] | None,
    Field(
        description='A JSON Schema the answer must satisfy, e.g. {"type": "object", '
        '"properties": {"city": {"type": "string"}}, "required": ["city"]}. The '
        "answer is validated and also returned parsed in `parsed`."
    ),
]
ThinkArg = Annotated[
    bool | None,
    Field(
        description="Reasoning models: true to think first (returned apart in `thinking`), "
        "false to answer directly; unset leaves the model's default."
    ),
]

READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


def _limits(name: str) -> dict[str, Any]:
    """``ge`` / ``le`` (and no infinity or NaN) for a fit_model number, from ``fit.LIMITS``."""
    low, high, _ = LIMITS[name]
    return {"ge": low, "le": high, "allow_inf_nan": False}


def _int_limits(name: str) -> dict[str, Any]:
    low, high, _ = LIMITS[name]
    return {"ge": int(low), "le": int(high)}


def build_server(settings: Settings) -> MCPServer[Any]:
    """The inference server; its core is imported and the engine connected on first use."""
    made: list[InferenceService] = []

    def core() -> InferenceService:
        # Imported here so start-up (to `initialize`) skips the engine layer entirely.
        if not made:
            from .service import InferenceService

            made.append(InferenceService(settings))
        return made[0]

    def options(**values: Any) -> Any:
        from .service import generation_options

        return generation_options(**values)

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[None]:
        try:
            yield None
        finally:
            if made:
                await made[0].aclose()

    server = create_server(
        "inference", version=VERSION, instructions=INSTRUCTIONS, lifespan=lifespan
    )

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def list_models() -> ModelList:
        """List the models the engine can serve, with size, family and quantisation."""
        return await core().list_models()

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def show_model(
        model: Annotated[str, Field(description="Model name from list_models.")],
    ) -> ModelDetails:
        """Describe one model: family, parameter count, quantisation, context length, layers."""
        return await core().show_model(model)

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def loaded_models() -> LoadedModels:
        """Models in the engine's memory now, with RAM / VRAM use and unload time (Ollama)."""
        return await core().loaded_models()

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, openWorldHint=True))
    @tool_errors
    async def pull_model(
        model: Annotated[
            str, Field(description="Name to download, e.g. 'llama3.2:3b' or 'qwen2.5:7b'.")
        ],
        ctx: Context,
    ) -> PullResult:
        """Download a model into the engine, reporting progress (Ollama only; other engines
        load models when they start)."""
        return await core().pull_model(model, ProgressReporter(ctx, min_interval_s=0))

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def chat(
        ctx: Context,
        messages: Annotated[
            list[MessageIn] | None,
            Field(
                description='The conversation so far, oldest first, e.g. [{"role": "user", '
                '"content": "Hi"}]. Omit when passing prompt.'
            ),
        ] = None,
        prompt: Annotated[
            str | None,
            Field(description="A single user message; appended after messages if both given."),
        ] = None,
        system: SystemArg = None,
        model: ModelArg = None,
        temperature: TemperatureArg = None,
        seed: SeedArg = None,
        top_p: TopPArg = None,
        num_ctx: NumCtxArg = None,
        max_tokens: MaxTokensArg = None,
        stop: StopArg = None,
        json_schema: SchemaArg = None,
        think: ThinkArg = None,
    ) -> ChatAnswer:
        """Ask a local model: a conversation (messages) or one prompt. Streams progress with
        the text so far; returns the answer, any reasoning apart, and parsed JSON if a schema
        was given."""
        opts = options(
            temperature=temperature,
            seed=seed,
            top_p=top_p,
            num_ctx=num_ctx,
            max_tokens=max_tokens,
            stop=stop,
        )
        return await core().chat(
            messages=messages,
            prompt=prompt,
            system=system,
            model=model,
            options=opts,
            json_schema=json_schema,
            think=think,
            progress=ProgressReporter(ctx, min_interval_s=0),
        )

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def generate(
        ctx: Context,
        prompt: Annotated[str, Field(description="The text to complete.")],
        system: SystemArg = None,
        model: ModelArg = None,
        temperature: TemperatureArg = None,
        seed: SeedArg = None,
        top_p: TopPArg = None,
        num_ctx: NumCtxArg = None,
        max_tokens: MaxTokensArg = None,
        stop: StopArg = None,
        json_schema: SchemaArg = None,
        think: ThinkArg = None,
    ) -> ChatAnswer:
        """Complete a prompt with the engine's completion endpoint (Ollama applies the model's
        template; OpenAI-compatible engines continue the text as written). Streams progress."""
        opts = options(
            temperature=temperature,
            seed=seed,
            top_p=top_p,
            num_ctx=num_ctx,
            max_tokens=max_tokens,
            stop=stop,
        )
        return await core().generate(
            prompt=prompt,
            system=system,
            model=model,
            options=opts,
            json_schema=json_schema,
            think=think,
            progress=ProgressReporter(ctx, min_interval_s=0),
        )

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def embed(
        texts: Annotated[
            list[str], Field(description="Texts to embed (a batch); one vector each, in order.")
        ],
        model: Annotated[
            str | None,
            Field(description="Embedding model; omit for backend.embed_model or the default."),
        ] = None,
    ) -> EmbedResult:
        """Turn texts into embedding vectors; says the dimension and how they were pooled."""
        return await core().embed(texts, model)

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def fit_model(
        model: Annotated[
            str | None,
            Field(
                description="Model to check, e.g. 'qwen2.5:32b' or 'meta-llama/Llama-3.1-8B'. "
                "Its architecture comes from the engine if it has it, else a built-in table."
            ),
        ] = None,
        quantization: Annotated[
            str | None,
            Field(
                description="Weight format: GGUF names (Q4_K_M, Q5_K_M, Q6_K, Q8_0, F16, ...), "
                "INT4/AWQ/GPTQ, FP8, or bits per weight such as 4.5. Default: the engine's, "
                "else Q4_K_M."
            ),
        ] = None,
        context: Annotated[
            int | None,
            Field(**_int_limits("context"), description="Context length in tokens; default 8192."),
        ] = None,
        kv_cache: Annotated[
            str, Field(description="KV cache precision: f16 (default), q8_0 or q4_0.")
        ] = "f16",
        gpu_memory_gb: Annotated[
            float | None,
            Field(
                **_limits("gpu_memory_gb"),
                description="GPU memory in GB to check against, e.g. 24; default: measured "
                "with nvidia-ml-py, else the configured default.",
            ),
        ] = None,
        gpu_index: Annotated[int, Field(ge=0, description="Which GPU to measure.")] = 0,
        parameters_billions: Annotated[
            float | None,
            Field(
                **_limits("parameters_billions"),
                description="Parameter count in billions (overrides), e.g. 7 or 0.135.",
            ),
        ] = None,
        layers: Annotated[
            int | None, Field(**_int_limits("layers"), description="Transformer layers.")
        ] = None,
        kv_heads: Annotated[
            int | None,
            Field(**_int_limits("kv_heads"), description="Key/value heads (num_key_value_heads)."),
        ] = None,
        head_dim: Annotated[
            int | None, Field(**_int_limits("head_dim"), description="Attention head size.")
        ] = None,
    ) -> FitReport:
        """Will a model fit the GPU? Weights + KV cache + overhead against GPU memory, with
        the breakdown in GB, the headroom and the largest context that fits."""
        return await core().fit_model(
            model=model,
            quantization=quantization,
            context=context,
            kv_cache=kv_cache,
            gpu_memory_gb=gpu_memory_gb,
            gpu_index=gpu_index,
            parameters_billions=parameters_billions,
            layers=layers,
            kv_heads=kv_heads,
            head_dim=head_dim,
        )

    return server

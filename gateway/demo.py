"""``localmcp demo``: the inference server on a real engine, driven by a real MCP client.

Starts the bundled llama.cpp engine unless one is configured, launches ``localmcp serve
inference`` as a stdio subprocess, connects with the MCP SDK's client and calls the tools one
after another, streaming the chat answer from the server's progress notifications. This is
a command-line program: it prints to stdout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .shared.config import Settings
from .shared.errors import LocalMCPError

logger = logging.getLogger(__name__)

DEFAULT_QUESTION = "In two sentences: why is the sky blue?"
DEFAULT_EMBED_TEXTS = ["The sky is blue.", "天空是蓝色的。", "Paris is the capital of France. 🇫🇷"]
DEFAULT_GENERATE_PROMPT = "The three primary colours are"
STRUCTURED_PROMPT = "Give a city."
STRUCTURED_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
}


@dataclass
class DemoOptions:
    """What the demo asks and how patiently."""

    question: str = DEFAULT_QUESTION
    max_tokens: int = 96
    fit_model_args: dict[str, Any] = field(
        default_factory=lambda: {
            "model": "qwen2.5:32b",
            "context": 8192,
            "gpu_memory_gb": 22,
        }
    )
    fit_quantizations: list[str] = field(default_factory=lambda: ["Q4_K_M", "F16"])
    embed_texts: list[str] = field(default_factory=lambda: list(DEFAULT_EMBED_TEXTS))
    config_path: Path | None = None
    call_timeout: float = 600.0
    engine_timeout: float = 180.0
    verbose: bool = False


@dataclass
class Endpoint:
    """The engine the inference server is pointed at, as environment for its process."""

    env: dict[str, str]
    description: str


class DemoFailed(LocalMCPError):
    """One or more demo steps failed; each was already reported."""


class Printer:
    """Rich panels and tables on a terminal, plain ``key: value`` lines elsewhere."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rich = console.is_terminal
        self._midline = False

    def _end_stream(self) -> None:
        if self._midline:
            self.console.file.write("\n")
            self._midline = False

    def heading(self, text: str) -> None:
        """A step heading."""
        self._end_stream()
        if self.rich:
            self.console.rule(f"[bold]{text}")
        else:
            self.console.print(f"\n== {text} ==", markup=False, highlight=False)

    def line(self, text: str, style: str | None = None) -> None:
        """One line of text, never interpreted as markup."""
        self._end_stream()
        self.console.print(
            text,
            style=style if self.rich else None,
            markup=False,
            highlight=False,
            soft_wrap=not self.rich,
        )

    def error(self, text: str) -> None:
        """A failure, clearly marked."""
        self.line(f"error: {text}", style="bold red")

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Rows of values under named columns."""
        self._end_stream()
        if self.rich:
            table = Table(title=title, title_justify="left")
            for col in columns:
                table.add_column(col, overflow="fold")
            for row in rows:
                table.add_row(*(Text(_cell(v)) for v in row))  # values are data, not markup
            self.console.print(table)
            return
        self.line(f"{title}:")
        for row in rows:
            self.line(
                "  " + " | ".join(f"{c}={_cell(v)}" for c, v in zip(columns, row, strict=False))
            )
        if not rows:
            self.line("  (none)")

    def mapping(self, title: str, data: dict[str, Any]) -> None:
        """A record as key/value pairs."""
        self._end_stream()
        if self.rich:
            table = Table.grid(padding=(0, 2))
            table.add_column(style="bold cyan")
            table.add_column(overflow="fold")
            for key, value in data.items():
                table.add_row(Text(str(key)), Text(_cell(value)))
            self.console.print(Panel(table, title=title, title_align="left"))
            return
        self.line(f"{title}:")
        for key, value in data.items():
            self.line(f"  {key}: {_cell(value)}")

    def stream(self, text: str) -> None:
        """Append streamed text to the current line."""
        self.console.file.write(text)
        self.console.file.flush()
        self._midline = True


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 300 else text[:297] + "..."
    return str(value)


@asynccontextmanager
async def engine_endpoint(
    settings: Settings, options: DemoOptions, printer: Printer
) -> AsyncIterator[Endpoint]:
    """The configured engine, or the bundled llama.cpp engine started for the demo's duration."""
    backend = settings.backend
    if backend.kind != "auto" or backend.base_url:
        # A configured engine: the server reads the same settings, so pass nothing extra.
        yield Endpoint(env={}, description=f"configured {backend.kind} engine {backend.base_url}")
        return

    import anyio

    from .engine import LlamaEngine, ensure_engine

    printer.line("No engine configured: using the bundled llama.cpp engine (SmolLM2-135M).")
    began = time.monotonic()
    await anyio.to_thread.run_sync(ensure_engine)
    async with LlamaEngine(startup_timeout=options.engine_timeout) as engine:
        printer.line(
            f"Engine ready at {engine.base_url} (model {engine.model}) in "
            f"{time.monotonic() - began:.1f} s; log {engine.log_path}"
        )
        yield Endpoint(
            env={
                "LOCALMCP_BACKEND__KIND": "openai",
                "LOCALMCP_BACKEND__BASE_URL": engine.base_url,
                "LOCALMCP_BACKEND__MODEL": engine.model,
            },
            description=f"bundled llama.cpp at {engine.base_url}",
        )


def server_parameters(endpoint: Endpoint, options: DemoOptions) -> Any:
    """How to launch ``localmcp serve inference`` as a stdio subprocess of this interpreter."""
    from mcp.client.stdio import StdioServerParameters

    args = ["-m", "localmcp", "serve", "inference"]
    if options.config_path is not None:
        args += ["--config", str(options.config_path)]
    # The SDK passes only a minimal environment; keep our own settings and config location.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("LOCALMCP_", "XDG_", "OLLAMA_")) or k in ("VIRTUAL_ENV", "TMPDIR")
    }
    env = {**inherited, **endpoint.env}
    if not options.verbose:
        env.setdefault("LOCALMCP_LOG_LEVEL", "WARNING")
    return StdioServerParameters(command=sys.executable, args=args, env=env)


def _one_line(text: str, limit: int = 110) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _leaf(exc: BaseException) -> BaseException:
    """The one real error inside nested single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _text_of(result: Any) -> str:
    parts = [getattr(block, "text", "") for block in result.content]
    return " ".join(p for p in parts if p).strip()


def _structured(result: Any) -> dict[str, Any]:
    data = result.structured_content
    if isinstance(data, dict):
        return data
    text = _text_of(result)
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"result": text}
    return parsed if isinstance(parsed, dict) else {"result": parsed}


class Session:
    """One MCP client session, with each tool call timed and its failure reported."""

    def __init__(self, client: Any, printer: Printer, options: DemoOptions) -> None:
        self.client = client
        self.printer = printer
        self.options = options
        self.failures: list[str] = []

    async def call(
        self,
        name: str,
        arguments: dict[str, Any],
        progress: Callable[[float, float | None, str | None], Awaitable[None]] | None = None,
        *,
        fatal: bool = True,
    ) -> dict[str, Any] | None:
        """Call one tool; its structured result, or None after printing why it failed.

        A failure of a ``fatal=False`` call is printed as the tool's answer, not a failure."""
        import anyio

        began = time.monotonic()
        try:
            with anyio.fail_after(self.options.call_timeout):
                result = await self.client.call_tool(name, arguments, progress_callback=progress)
        except TimeoutError:
            self._fail(name, f"no answer within {self.options.call_timeout:.0f} s")
            return None
        except Exception as exc:  # the SDK raises several protocol error types
            self._fail(name, f"{type(exc).__name__}: {exc}")
            return None
        seconds = time.monotonic() - began
        if result.is_error:
            message = _text_of(result).removeprefix(f"Error executing tool {name}: ")
            if not fatal:
                self.printer.line(f"{name} answered with a tool error: {message}")
                return None
            self._fail(name, message or "the tool reported an error with no message")
            return None
        self.printer.line(f"{name} answered in {seconds:.2f} s", style="dim")
        return _structured(result)

    def _fail(self, name: str, message: str) -> None:
        self.failures.append(name)
        self.printer.error(f"{name}: {message}")


_FIT_COLUMNS = ["fits", "weights_gb", "kv_cache_gb", "needed_gb", "available_gb", "max_context"]


def _models_rows(data: dict[str, Any]) -> list[list[Any]]:
    models = data.get("models") or []
    return [
        [
            m.get("name"),
            m.get("family"),
            m.get("parameter_size") or m.get("parameter_count"),
            m.get("quantization"),
            m.get("context_length"),
        ]
        for m in models
        if isinstance(m, dict)
    ]


async def run_tools(client: Any, printer: Printer, options: DemoOptions) -> list[str]:
    """Call every inference tool once, printing what each returned; names of failed steps."""
    session = Session(client, printer, options)

    printer.heading("tools/list")
    tools = (await client.list_tools()).tools
    printer.table(
        f"{len(tools)} tools",
        ["tool", "description"],
        [[t.name, _one_line(t.description or "")] for t in tools],
    )

    printer.heading("list_models")
    models = await session.call("list_models", {})
    model_name: str | None = None
    if models is not None:
        rows = _models_rows(models)
        printer.table("models", ["name", "family", "parameters", "quantization", "context"], rows)
        model_name = rows[0][0] if rows else None

    printer.heading("show_model")
    if model_name:
        shown = await session.call("show_model", {"model": model_name})
        if shown is not None:
            printer.mapping(f"show_model {model_name}", shown)
    else:
        printer.error("show_model: skipped, list_models gave no model name")
        session.failures.append("show_model")

    printer.heading("loaded_models")
    loaded = await session.call("loaded_models", {})
    if loaded is not None:
        printer.mapping("loaded_models", loaded)

    printer.heading("fit_model")
    fits: list[list[Any]] = []
    advice: list[str] = []
    for quantization in options.fit_quantizations:
        args = {**options.fit_model_args, "quantization": quantization}
        fit = await session.call("fit_model", args)
        if fit is not None:
            fits.append([quantization, *(fit.get(k) for k in _FIT_COLUMNS)])
            advice.append(f"{quantization}: {fit.get('advice', '')}")
    printer.table(
        f"fit_model {json.dumps(options.fit_model_args, ensure_ascii=False)}",
        ["quant", "fits", "weights GB", "KV GB", "needed GB", "GPU GB", "max context"],
        fits,
    )
    for line in advice:
        printer.line(line)

    printer.heading("chat (streaming)")
    printer.line(f"Q: {options.question}")
    streamed: list[str] = []
    notifications = 0

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        nonlocal notifications
        notifications += 1
        if message:
            if not streamed:
                printer.stream("A (streaming): ")
            streamed.append(message)
            printer.stream(message)

    chat = await session.call(
        "chat",
        {"prompt": options.question, "max_tokens": options.max_tokens, "temperature": 0.2},
        progress=on_progress,
    )
    printer.line(f"progress notifications received: {notifications}", style="dim")
    if chat is not None:
        answer = chat.get("content") or ""
        if not str(answer).strip():
            printer.error("chat: the answer is empty")
            session.failures.append("chat")
        details = {k: v for k, v in chat.items() if k not in ("content",)}
        printer.mapping("chat result", {"answer": answer, **details})

    printer.heading("chat (JSON schema)")
    printer.line(f"Q: {STRUCTURED_PROMPT}  schema: {json.dumps(STRUCTURED_SCHEMA)}")
    # A small model can stray from the schema (llama-cpp-python's grammar does not always hold
    # it); the server then refuses the reply, and that refusal is this step's answer.
    structured = await session.call(
        "chat",
        {
            "prompt": STRUCTURED_PROMPT,
            "json_schema": STRUCTURED_SCHEMA,
            "max_tokens": 80,
            "temperature": 0,
        },
        fatal=False,
    )
    if structured is not None:
        printer.mapping("parsed (validated against the schema)", structured.get("parsed") or {})

    printer.heading("generate")
    printer.line(f"prompt: {DEFAULT_GENERATE_PROMPT!r}")
    generated = await session.call(
        "generate", {"prompt": DEFAULT_GENERATE_PROMPT, "max_tokens": 24, "temperature": 0.2}
    )
    if generated is not None:
        printer.mapping("generate result", generated)

    printer.heading("pull_model")
    # Only Ollama pulls; other engines refuse, and the refusal is what the tool returns.
    pulled = await session.call("pull_model", {"model": model_name or ""}, fatal=False)
    if pulled is not None:
        printer.mapping("pull_model result", pulled)

    printer.heading("embed")
    embedded = await session.call("embed", {"texts": options.embed_texts})
    if embedded is not None:
        vectors = embedded.get("vectors") or []
        summary = {k: v for k, v in embedded.items() if k != "vectors"}
        rows = [
            [text, len(vec), ", ".join(f"{x:.3f}" for x in vec[:4]) + ", ..."]
            for text, vec in zip(options.embed_texts, vectors, strict=False)
            if isinstance(vec, list)
        ]
        printer.table("embeddings", ["text", "dimension", "first values"], rows)
        if summary:
            printer.mapping("embed result", summary)
        if len(rows) != len(options.embed_texts):
            printer.error(f"embed: expected {len(options.embed_texts)} vectors, got {len(rows)}")
            session.failures.append("embed")

    return session.failures


async def run_demo(settings: Settings, options: DemoOptions, console: Console) -> None:
    """The whole demo; raises ``DemoFailed`` (after printing why) when any step failed."""
    from mcp import Client

    printer = Printer(console)
    began = time.monotonic()
    async with engine_endpoint(settings, options, printer) as endpoint:
        params = server_parameters(endpoint, options)
        printer.line(
            f"Launching `{params.command} {' '.join(params.args)}` over stdio "
            f"against the {endpoint.description}."
        )
        connect_began = time.monotonic()
        try:
            async with Client(params, read_timeout_seconds=options.call_timeout) as client:
                info = client.server_info
                printer.line(
                    f"Connected to {info.name if info else 'server'} "
                    f"{info.version if info else ''} in {time.monotonic() - connect_began:.2f} s "
                    f"(protocol {client.protocol_version})."
                )
                failures = await run_tools(client, printer, options)
        except LocalMCPError:
            raise
        except Exception as exc:
            leaf = _leaf(exc)
            raise DemoFailed(
                f"the inference server could not be run over stdio: {type(leaf).__name__}: {leaf}",
                hint="Run `localmcp serve inference` yourself to see its error, or pass --verbose.",
            ) from exc

    printer.heading("done")
    total = time.monotonic() - began
    if failures:
        raise DemoFailed(
            f"{len(failures)} step(s) failed: {', '.join(failures)} ({total:.1f} s).",
            hint="The messages above say what went wrong.",
        )
    printer.line(f"All steps succeeded in {total:.1f} s.", style="bold green")

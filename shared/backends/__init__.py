"""Engine backends behind one async interface, and ``connect_backend`` to pick one.

``backend.kind = "ollama"`` uses Ollama's native API (``OllamaBackend``), ``"openai"`` any
OpenAI-compatible engine (``OpenAICompatBackend``), and ``"auto"`` probes loopback ports
(Ollama on 11434, then 8000, 8080 and 1234 for OpenAI-compatible engines) and logs which one
it picked. The implementations are imported on first use so importing this package stays cheap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..config import BackendSettings
from ..errors import BackendUnavailable, ConfigError
from .base import (
    Backend,
    ChatChunk,
    ChatMessage,
    ChatResult,
    Embeddings,
    GenerationOptions,
    LoadedModel,
    ModelInfo,
    PullProgress,
    aclose_stream,
    collect,
)

if TYPE_CHECKING:
    from .ollama import OllamaBackend
    from .openai_compat import OpenAICompatBackend

__all__ = [
    "DEFAULT_PROBE_PORTS",
    "Backend",
    "ChatChunk",
    "ChatMessage",
    "ChatResult",
    "Embeddings",
    "GenerationOptions",
    "LoadedModel",
    "ModelInfo",
    "OllamaBackend",
    "OpenAICompatBackend",
    "PullProgress",
    "aclose_stream",
    "collect",
    "connect_backend",
]

logger = logging.getLogger(__name__)

#: Loopback ports ``auto`` tries, in order: Ollama, vLLM / TensorRT-LLM / llama-cpp-python,
#: llama.cpp's llama-server, LM Studio.
DEFAULT_PROBE_PORTS: tuple[int, ...] = (11434, 8000, 8080, 1234)


def __getattr__(name: str) -> Any:
    if name == "OllamaBackend":
        from .ollama import OllamaBackend

        return OllamaBackend
    if name == "OpenAICompatBackend":
        from .openai_compat import OpenAICompatBackend

        return OpenAICompatBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def connect_backend(
    settings: BackendSettings, *, probe_ports: Sequence[int] | None = None
) -> Backend:
    """The backend ``settings`` describe; for ``auto``, the first engine that answers.

    ``OLLAMA_HOST``, when set, is asked first. ``probe_ports`` replaces ``DEFAULT_PROBE_PORTS``
    (tests pass ports they bound themselves).
    Each port is asked ``GET /`` (Ollama answers "Ollama is running") or ``/api/version``,
    then ``GET /v1/models`` (OpenAI-compatible), each within ``backend.probe_timeout``.
    """
    from .ollama import OllamaBackend
    from .openai_compat import OpenAICompatBackend, normalise_base_url

    if settings.kind == "ollama":
        return OllamaBackend(settings.base_url, settings=settings)
    if settings.kind == "openai":
        if not settings.base_url:
            raise ConfigError(
                "backend.kind is 'openai' but backend.base_url is unset.",
                hint="Set backend.base_url (LOCALMCP_BACKEND__BASE_URL), e.g. "
                "http://127.0.0.1:8000/v1, or use backend.kind = 'auto'.",
            )
        return OpenAICompatBackend(settings.base_url, settings=settings)

    if settings.base_url:
        roots = [_root_of(settings.base_url)]
    else:
        roots = [f"http://127.0.0.1:{port}" for port in (probe_ports or DEFAULT_PROBE_PORTS)]
        ollama_host = os.environ.get("OLLAMA_HOST", "").strip()
        if ollama_host:  # where the user said Ollama is: asked first
            roots = list(dict.fromkeys([_root_of(ollama_host, default_port=11434), *roots]))
    tried: list[str] = []
    for root in roots:
        found = await _probe(root, settings.probe_timeout, settings.api_key)
        tried.append(f"{root} ({found[1] if found[0] is None else found[0]})")
        if found[0] == "ollama":
            logger.info("backend auto: using Ollama at %s", root)
            return OllamaBackend(root, settings=settings)
        if found[0] == "openai":
            url = normalise_base_url(root)
            logger.info("backend auto: using the OpenAI-compatible engine at %s", url)
            return OpenAICompatBackend(url, settings=settings)
    raise BackendUnavailable(
        f"no inference engine answered; tried {', '.join(tried)}.",
        hint="Start one (`localmcp demo` starts llama.cpp; `ollama serve`; `vllm serve MODEL`) "
        "or set backend.kind and backend.base_url (LOCALMCP_BACKEND__KIND, "
        "LOCALMCP_BACKEND__BASE_URL).",
        tried=tried,
    )


def _root_of(url: str, *, default_port: int | None = None) -> str:
    from urllib.parse import urlsplit

    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    netloc = parts.netloc
    if default_port is not None and parts.port is None:
        netloc = f"{netloc}:{default_port}"
    return f"{parts.scheme}://{netloc}"


async def _probe(root: str, timeout: float, api_key: Any = None) -> tuple[str | None, str]:
    """Which kind of engine answers at ``root``: ("ollama" | "openai" | None, what happened)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
            try:
                home = await client.get(f"{root}/")
                if "Ollama is running" in home.text:
                    return "ollama", "Ollama"
                version = await client.get(f"{root}/api/version")
                if version.status_code == 200 and "version" in _json(version):
                    return "ollama", "Ollama"
            except httpx.TimeoutException:
                return None, "no answer"
            models = await client.get(f"{root}/v1/models")
            if models.status_code == 200 and isinstance(_json(models).get("data"), list):
                return "openai", "OpenAI-compatible"
            if models.status_code in (401, 403):
                return "openai", "OpenAI-compatible (needs an API key)"
            return None, f"answers HTTP but is no engine ({models.status_code})"
    except httpx.ConnectError:
        return None, "refused"
    except httpx.TimeoutException:
        return None, "no answer"
    except httpx.HTTPError as exc:
        return None, type(exc).__name__


def _json(response: Any) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

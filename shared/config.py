"""Settings: one ``LOCALMCP_`` prefix, an optional TOML file, one section per server.

Precedence, highest first: explicit arguments, environment (``LOCALMCP_BACKEND__MODEL=...``,
nested sections joined by ``__``), the TOML file (``--config`` or the per-user config path),
then defaults that run on a laptop. Settings are read once at start-up and passed down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError

APP_NAME = "localmcp"


def default_config_path() -> Path:
    """Where the per-user config file lives (XDG on Linux, the platform's place elsewhere)."""
    from platformdirs import user_config_path

    return user_config_path(APP_NAME) / "config.toml"


def default_data_dir() -> Path:
    """Where databases and other state live by default."""
    from platformdirs import user_data_path

    return user_data_path(APP_NAME)


class BackendSettings(BaseModel):
    """Which inference engine to talk to and how patiently."""

    kind: Literal["auto", "ollama", "openai"] = Field(
        default="auto",
        description="'ollama' (native API), 'openai' (any OpenAI-compatible engine) or 'auto' "
        "(probe Ollama on 11434, then 8000, 8080, 1234 on loopback).",
    )
    base_url: str | None = Field(
        default=None,
        description="Engine address. Ollama: host[:port] (else OLLAMA_HOST). OpenAI-compatible: "
        "http://host:port/v1.",
    )
    api_key: SecretStr | None = Field(
        default=None, description="Bearer token for OpenAI-compatible engines."
    )
    model: str | None = Field(
        default=None, description="Default chat model; else the engine's first."
    )
    embed_model: str | None = Field(default=None, description="Default embedding model.")
    embed_pooling: Literal["mean", "none"] = Field(
        default="mean",
        description="What to do when an engine returns one vector per token (llama.cpp without "
        "pooling): 'mean' pools and L2-normalises them client-side; 'none' refuses.",
    )
    connect_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to establish a connection."
    )
    read_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds to wait for the next bytes from the engine (first token included).",
    )
    generation_timeout: float = Field(
        default=3600.0, gt=0, description="Upper bound in seconds for one whole generation."
    )
    retries: int = Field(default=2, ge=0, le=10, description="Retries on connection errors only.")
    probe_timeout: float = Field(
        default=0.5, gt=0, description="Seconds per port when probing 'auto'."
    )


class HttpSettings(BaseModel):
    """Streamable HTTP transport: loopback by default, optional bearer token."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    path: str = "/mcp"
    token: SecretStr | None = Field(
        default=None,
        description="If set, every HTTP request must carry 'Authorization: Bearer TOKEN'.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list, description="Extra Origin values allowed besides loopback ones."
    )


class InferenceSettings(BaseModel):
    """Inference server section."""

    max_prompt_chars: int = Field(
        default=2_000_000,
        gt=0,
        description="Longest prompt or message text accepted, in characters.",
    )
    progress_every_tokens: int = Field(
        default=16,
        gt=0,
        description="Send one progress notification per this many streamed chunks.",
    )
    default_gpu_memory_gb: float | None = Field(
        default=None, gt=0, description="GPU memory to assume in fit_model when NVML is absent."
    )


class KBSettings(BaseModel):
    """Knowledge-base server section."""

    uri: str | None = Field(
        default=None,
        description="Milvus server / cluster / Zilliz URI. Unset: a Milvus Lite file in the data "
        "directory.",
    )
    token: SecretStr | None = Field(default=None, description="Token for a Milvus server.")
    db_path: Path | None = Field(
        default=None, description="Milvus Lite file; default DATA_DIR/kb.db."
    )
    default_collection: str = "default"
    allowed_roots: list[Path] = Field(
        default_factory=list, description="Only files under these folders may be ingested."
    )
    read_only: bool = Field(default=False, description="Hide kb_ingest and kb_delete.")
    preload: bool = Field(
        default=True,
        description="Load every knowledge base when the server starts, so that the first "
        "search does not wait for it; off: each loads on first use.",
    )
    embed_model: str | None = Field(
        default=None, description="Embedding model; unset means keyword (BM25) search only."
    )
    embed_batch: int = Field(default=32, gt=0)
    chunk_size: int = Field(
        default=1200, ge=100, le=16_000, description="Target chunk size in characters."
    )
    chunk_overlap: int = Field(
        default=150, ge=0, description="Characters shared by adjacent chunks."
    )
    max_file_mb: float = Field(
        default=50.0, gt=0, description="Files larger than this are refused."
    )
    ingest_timeout: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds one ingest may run; files not reached by then are listed, and "
        "the same ingest run again continues where it stopped.",
    )
    include: list[str] = Field(
        default_factory=lambda: ["*.md", "*.markdown", "*.txt", "*.html", "*.htm", "*.pdf"]
    )
    exclude: list[str] = Field(default_factory=lambda: [".git/*", "node_modules/*", ".venv/*"])
    fusion: Literal["rrf", "weighted"] = "rrf"
    rrf_k: int = Field(default=60, gt=0)
    dense_weight: float = Field(
        default=0.5, ge=0, le=1, description="Weight of dense in 'weighted'."
    )
    rerank_model: str | None = Field(default=None, description="Model for the engine's /v1/rerank.")
    rerank_candidates: int = Field(default=30, gt=0)
    ask_model: str | None = Field(
        default=None, description="Chat model for kb_ask; else the backend's."
    )
    ask_context_chars: int = Field(
        default=12_000, gt=0, description="Source text sent to kb_ask's model."
    )
    ask_top_k: int = Field(
        default=6, ge=1, le=50, description="Chunks kb_ask retrieves by default."
    )
    ask_min_similarity: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="Cosine similarity a dense match needs to count as relevant in kb_ask "
        "when no keyword matches; unset: only keyword matches count.",
    )
    max_query_chars: int = Field(
        default=4000, gt=0, description="Longest search query or question accepted, in characters."
    )


class Settings(BaseSettings):
    """All of localmcp's settings."""

    model_config = SettingsConfigDict(
        env_prefix="LOCALMCP_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    data_dir: Path = Field(default_factory=default_data_dir)
    backend: BackendSettings = Field(default_factory=BackendSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    kb: KBSettings = Field(default_factory=KBSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _toml_file_for_load
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


# Set only for the duration of one ``load_settings`` call; pydantic-settings asks for the
# sources through a classmethod, so the file to read has to be visible from there.
_toml_file_for_load: Path | None = None


def load_settings(config_path: Path | None = None, **overrides: Any) -> Settings:
    """Read settings once: explicit ``config_path`` (must exist) or the per-user file if any."""
    global _toml_file_for_load

    if config_path is not None:
        path = Path(config_path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"config file {str(path)!r} does not exist.",
                hint="Pass an existing TOML file to --config, or omit it to use defaults.",
            )
    else:
        candidate = default_config_path()
        path = candidate if candidate.is_file() else None

    _toml_file_for_load = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        where = f"in {str(path)!r} or LOCALMCP_* variables" if path else "in LOCALMCP_* variables"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(
            f"invalid settings {where}: {problems}.",
            hint="Fix the named keys (see README, 'Configuration').",
        ) from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read config file {str(path)!r}: {exc}.", hint="Check it is valid TOML."
        ) from exc
    finally:
        _toml_file_for_load = None

"""The one exception tree of the suite.

Every failure a user or a calling model can act on is a ``LocalMCPError``: its message says
what failed (with the offending value) and its ``hint`` says what to do next. Foreign errors
(httpx, ollama, pymilvus) are translated into this tree at one place per client and chained
with ``raise ... from``. Only the tool-dispatch layer (``shared.server``) turns these into MCP
tool errors; the core never imports MCP.
"""

from __future__ import annotations

from typing import Any


class LocalMCPError(Exception):
    """Base of every anticipated failure: a message, a hint and some context."""

    def __init__(self, message: str, *, hint: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.context = context

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class ConfigError(LocalMCPError):
    """The configuration (file, environment or flags) is invalid or incomplete."""


class BadInput(LocalMCPError):
    """An argument is malformed, too large or otherwise unusable."""


class NotFound(LocalMCPError):
    """A named thing (model, collection, document, path) does not exist."""


class Unsupported(LocalMCPError):
    """The engine or configuration cannot do what was asked (e.g. pull on llama.cpp)."""


class BackendError(LocalMCPError):
    """Base of failures talking to an inference engine."""


class BackendUnavailable(BackendError):
    """The engine could not be reached (connection refused, DNS, not started)."""


class BackendTimeout(BackendError):
    """The engine did not answer within the configured time limit."""


class UpstreamError(BackendError):
    """The engine answered with an error; ``status`` keeps its HTTP status code."""

    def __init__(
        self, message: str, *, status: int | None = None, hint: str | None = None, **context: Any
    ) -> None:
        super().__init__(message, hint=hint, status=status, **context)
        self.status = status


class OutputInvalid(BackendError):
    """The engine's output does not satisfy the requested JSON schema."""


class StoreError(LocalMCPError):
    """The vector store failed or refused an operation."""


class StoreLocked(StoreError):
    """Another process holds the embedded database file."""

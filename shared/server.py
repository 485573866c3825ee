"""Build a server and run it on stdio or Streamable HTTP.

MCP SDK names are taken from here only, so an SDK upgrade touches one module. This is also
the single place where exceptions become MCP tool and resource errors: a ``LocalMCPError``
keeps its message and hint; anything else is logged with its traceback and reported as an
internal error that names the tool or resource, so the client never sees a raw traceback.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, ParamSpec, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import ToolAnnotations

from .config import HttpSettings
from .errors import LocalMCPError, NotFound

__all__ = [
    "Context",
    "MCPServer",
    "ProgressReporter",
    "ToolAnnotations",
    "create_server",
    "resource_errors",
    "run_server",
    "tool_errors",
]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

Transport = Literal["stdio", "http"]


def create_server(
    name: str,
    *,
    version: str,
    instructions: str,
    lifespan: Callable[[MCPServer[Any]], AbstractAsyncContextManager[Any]] | None = None,
) -> MCPServer[Any]:
    """Create the SDK server object for one localmcp server."""
    return MCPServer(
        name=f"localmcp-{name}",
        version=version,
        instructions=instructions,
        lifespan=lifespan,
        log_level="WARNING",
    )


def _translated(
    fn: Callable[P, Awaitable[R]], kind: str, error: type[Exception], missing: type[Exception]
) -> Callable[P, Awaitable[R]]:
    """``fn`` with every failure raised as ``error`` (``missing`` for ``NotFound``): a
    ``LocalMCPError`` keeps its message and hint, anything else is logged with its traceback
    and named as a bug."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (error, missing):
            raise
        except LocalMCPError as exc:
            logger.info("%s %s failed: %s", kind, fn.__name__, exc)
            raise (missing if isinstance(exc, NotFound) else error)(str(exc)) from exc
        except Exception as exc:
            logger.exception("%s %s raised an unexpected error", kind, fn.__name__)
            raise error(
                f"internal error in {fn.__name__}: {type(exc).__name__}: {exc}. "
                "This is a localmcp bug; the server log (stderr) has the traceback."
            ) from exc

    return wrapper


def tool_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Wrap a tool so every failure reaches the client as an actionable MCP tool error."""
    return _translated(fn, "tool", ToolError, ToolError)


def resource_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Wrap a resource reader: a missing thing is "not found", other failures keep their text."""
    return _translated(fn, "resource", ResourceError, ResourceNotFoundError)


class ProgressReporter:
    """Send MCP progress notifications, rate-limited so a fast stream does not flood the client.

    The core calls ``await reporter(done, total, message)``; this adapter forwards to the
    request's ``Context`` when the client asked for progress and drops it otherwise.
    """

    def __init__(self, ctx: Context[Any, Any] | None, min_interval_s: float = 0.1) -> None:
        self._ctx = ctx
        self._min_interval = min_interval_s
        self._last = 0.0

    async def __call__(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        if self._ctx is None:
            return
        now = time.monotonic()
        final = total is not None and progress >= total
        if not final and now - self._last < self._min_interval:
            return
        self._last = now
        await self._ctx.report_progress(progress, total, message)


def _transport_security(http: HttpSettings, port: int) -> Any:
    """Host/Origin checks against DNS rebinding: loopback names plus configured origins."""
    from mcp.server.transport_security import TransportSecuritySettings

    loopback = ["127.0.0.1", "localhost", "[::1]"]
    hosts = [f"{h}:{port}" for h in loopback] + loopback
    if http.host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
        hosts += [http.host, f"{http.host}:{port}"]
    origins = [f"http://{h}:{port}" for h in loopback] + list(http.allowed_origins)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


class _StaticTokenVerifier:
    """Accept exactly one configured bearer token (constant-time comparison)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def verify_token(self, token: str) -> Any:
        import hmac

        from mcp.server.auth.provider import AccessToken

        if hmac.compare_digest(token.encode(), self._token.encode()):
            return AccessToken(token=token, client_id="localmcp", scopes=[])
        return None


def build_http_app(server: MCPServer[Any], http: HttpSettings, port: int) -> Any:
    """The Starlette app for Streamable HTTP, with transport security and optional token."""
    app = server.streamable_http_app(
        streamable_http_path=http.path,
        transport_security=_transport_security(http, port),
        host=http.host,
    )
    if http.token is None:
        return app
    return _BearerGate(app, http.token.get_secret_value())


class _BearerGate:
    """ASGI wrapper: refuse HTTP requests without the configured bearer token (401)."""

    def __init__(self, app: Any, token: str) -> None:
        self._app = app
        self._verifier = _StaticTokenVerifier(token)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "bearer" or await self._verifier.verify_token(value) is None:
                from starlette.responses import JSONResponse

                response = JSONResponse(
                    {"error": "missing or wrong bearer token; send 'Authorization: Bearer TOKEN'"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)


def run_server(
    server: MCPServer[Any],
    transport: Transport = "stdio",
    *,
    http: HttpSettings | None = None,
    ready_message: Sequence[str] = (),
) -> None:
    """Run ``server`` until the client disconnects (stdio) or the process is stopped (HTTP)."""
    import anyio

    if transport == "stdio":
        anyio.run(server.run_stdio_async)
        return

    import uvicorn

    http = http or HttpSettings()
    config_port = http.port
    app = build_http_app(server, http, config_port)
    for line in ready_message:
        logger.info("%s", line)
    logger.info("serving %s on http://%s:%d%s", server.name, http.host, config_port, http.path)
    uvicorn.Server(
        uvicorn.Config(app, host=http.host, port=config_port, log_level="warning", lifespan="on")
    ).run()

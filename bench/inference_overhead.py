"""Start-up and per-call overhead of the inference server against a bare MCPServer echo server.

Both are spawned the same way (a Python subprocess speaking MCP on stdio) and driven with raw
JSON-RPC lines, so the client adds nothing but a pipe read. Figures:

- cold start: spawn -> ``initialize`` result, median of N runs (the two servers alternate);
- per call: mean wall time of one ``tools/call`` over M calls after start-up, median of R
  rounds, for ``fit_model`` with an explicit architecture (no engine is contacted). The
  baseline is a second bare MCPServer whose only tool calls the same core function
  (``InferenceService.fit_model``) and returns the same ``FitReport``, so the ratio is the cost
  of the inference server's own layers. A trivial ``echo`` on the bare echo server is printed
  beside it for scale.

Run: ``python bench/inference_overhead.py [--runs 10] [--calls 200] [--rounds 5]``.
Target: both ratios <= 1.1. Linux / macOS (uses select on pipes).
"""

import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

PROTOCOL = "2025-11-25"
TIMEOUT_S = 60.0


class Echo(BaseModel):
    """The echo tool's structured result."""

    text: str


def serve_echo() -> None:
    """The baseline: a bare MCPServer with one structured echo tool, on stdio."""
    from mcp.server.mcpserver import MCPServer

    # WARNING, as localmcp's servers use: per-request INFO lines would cost the baseline time.
    server = MCPServer(name="echo", version="0", log_level="WARNING")

    @server.tool()
    async def echo(text: str) -> Echo:
        """Echo the text back."""
        return Echo(text=text)

    import anyio

    anyio.run(server.run_stdio_async)


def serve_bare_fit() -> None:
    """A bare MCPServer whose one tool calls the inference server's fit core directly."""
    import anyio
    from mcp.server.mcpserver import MCPServer

    from localmcp.servers.inference.fit import FitReport
    from localmcp.servers.inference.service import InferenceService
    from localmcp.shared.config import Settings

    server = MCPServer(name="bare-fit", version="0", log_level="WARNING")
    service = InferenceService(Settings())

    async def fit_model(
        parameters_billions: float,
        layers: int,
        kv_heads: int,
        head_dim: int,
        quantization: str,
        context: int,
        gpu_memory_gb: float,
    ) -> FitReport:
        """The inference server's fit core, called directly."""
        return await service.fit_model(
            parameters_billions=parameters_billions,
            layers=layers,
            kv_heads=kv_heads,
            head_dim=head_dim,
            quantization=quantization,
            context=context,
            gpu_memory_gb=gpu_memory_gb,
        )

    server.add_tool(fit_model)
    anyio.run(server.run_stdio_async)


class Proc:
    """A server subprocess with line-oriented JSON-RPC over its pipes."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._buffer = b""
        self._next_id = 0

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        self.send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        while True:
            reply = json.loads(self._readline())
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply["result"]

    def _readline(self) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + TIMEOUT_S
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no reply within {TIMEOUT_S:.0f} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise RuntimeError("server closed stdout")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def initialize(self) -> dict[str, Any]:
        result = self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environments() -> tuple[dict[str, str], dict[str, str]]:
    """Child environments: no user config, no engine to find (nothing is probed)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOCALMCP_")}
    base["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="bench-config-")
    inference = {
        **base,
        "LOCALMCP_BACKEND__KIND": "openai",
        "LOCALMCP_BACKEND__BASE_URL": f"http://127.0.0.1:{closed_port()}/v1",
        "LOCALMCP_DATA_DIR": tempfile.mkdtemp(prefix="bench-data-"),
        "LOCALMCP_LOG_LEVEL": "WARNING",
    }
    return inference, base


INFERENCE_CMD = [sys.executable, "-m", "localmcp", "serve", "inference"]
ECHO_CMD = [sys.executable, str(Path(__file__).resolve()), "--echo-server"]
BARE_FIT_CMD = [sys.executable, str(Path(__file__).resolve()), "--bare-fit-server"]
FIT_ARGS = {
    "parameters_billions": 32.8,
    "layers": 64,
    "kv_heads": 8,
    "head_dim": 128,
    "quantization": "Q4_K_M",
    "context": 8192,
    "gpu_memory_gb": 22,
}


def cold_start(cmd: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    proc = Proc(cmd, env)
    try:
        proc.initialize()
        return time.perf_counter() - began
    finally:
        proc.close()


def per_call(
    cmd: list[str], env: dict[str, str], tool: str, args: dict[str, Any], calls: int
) -> float:
    proc = Proc(cmd, env)
    try:
        proc.initialize()
        for _ in range(5):  # warm-up
            proc.request("tools/call", {"name": tool, "arguments": args})
        began = time.perf_counter()
        for _ in range(calls):
            result = proc.request("tools/call", {"name": tool, "arguments": args})
            if result.get("isError"):
                raise RuntimeError(f"{tool} failed: {result['content']}")
        return (time.perf_counter() - began) / calls
    finally:
        proc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="cold starts per server")
    parser.add_argument("--calls", type=int, default=200, help="tool calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="per-call rounds per server")
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare-fit-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        serve_echo()
        return
    if args.bare_fit_server:
        serve_bare_fit()
        return

    inference_env, echo_env = environments()
    cold_start(INFERENCE_CMD, inference_env)  # warm the OS file cache for both
    cold_start(ECHO_CMD, echo_env)

    starts: dict[str, list[float]] = {"inference": [], "echo": []}
    for _ in range(args.runs):
        starts["inference"].append(cold_start(INFERENCE_CMD, inference_env))
        starts["echo"].append(cold_start(ECHO_CMD, echo_env))

    calls: dict[str, list[float]] = {"inference": [], "bare": [], "echo": []}
    for _ in range(args.rounds):
        calls["inference"].append(
            per_call(INFERENCE_CMD, inference_env, "fit_model", FIT_ARGS, args.calls)
        )
        calls["bare"].append(per_call(BARE_FIT_CMD, echo_env, "fit_model", FIT_ARGS, args.calls))
        calls["echo"].append(per_call(ECHO_CMD, echo_env, "echo", {"text": "ping"}, args.calls))

    start_inf = statistics.median(starts["inference"])
    start_echo = statistics.median(starts["echo"])
    call_inf = statistics.median(calls["inference"])
    call_bare = statistics.median(calls["bare"])
    call_echo = statistics.median(calls["echo"])
    print(f"cold start to initialize (median of {args.runs}):")
    print(f"  inference server  {start_inf * 1000:8.1f} ms")
    print(f"  bare echo server  {start_echo * 1000:8.1f} ms")
    print(f"  ratio             {start_inf / start_echo:8.2f}x   (target <= 1.10)")
    print(f"per tools/call (median of {args.rounds} rounds x {args.calls} calls):")
    print(f"  inference server, fit_model  {call_inf * 1000:6.3f} ms")
    print(f"  bare server, same fit core   {call_bare * 1000:6.3f} ms")
    print(f"  ratio                        {call_inf / call_bare:6.2f}x   (target <= 1.10)")
    print(f"  bare server, trivial echo    {call_echo * 1000:6.3f} ms (fit_model, work included,")
    print(f"  costs {call_inf / call_echo:.2f}x an echo)")


if __name__ == "__main__":
    main()

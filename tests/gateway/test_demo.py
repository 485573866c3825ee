"""``localmcp demo`` as a new user runs it: real engine, real stdio server, real MCP client."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from localmcp.engine import LlamaEngine

pytestmark = pytest.mark.slow


def run_demo(exe: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exe), "demo", *args],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_demo_starts_its_own_engine_and_streams_a_real_answer(
    localmcp_exe: Path, isolated_env: dict[str, str], llama_engine: LlamaEngine
) -> None:
    # llama_engine is requested only so a missing engine skips or fails like everywhere else.
    done = run_demo(localmcp_exe, isolated_env, "--question", "What colour is the sky?")
    out = done.stdout

    assert done.returncode == 0, f"{out}\n{done.stderr}"
    assert "No engine configured: using the bundled llama.cpp engine" in out
    for tool in ("list_models", "show_model", "loaded_models", "fit_model", "chat", "embed"):
        assert f"== {tool}" in out
        assert f"{tool} answered in" in out
    assert "generate answered in" in out and "generate result" in out
    assert "parsed (validated against the schema)" in out or re.search(
        r"chat answered with a tool error: model .+ replied with (text that is not JSON|JSON "
        r"that does not satisfy the schema)",
        out,
    )
    assert "pull_model answered with a tool error: " in out and "cannot pull" in out

    streamed = re.search(r"^A \(streaming\): (.+)$", out, re.MULTILINE)
    assert streamed and streamed.group(1).strip(), out
    notifications = int(re.search(r"progress notifications received: (\d+)", out).group(1))
    assert notifications > 0
    assert "SmolLM2-135M-Instruct" in out
    assert "All steps succeeded" in out

    # The engine the demo started is gone again.
    url = re.search(r"Engine ready at (http://127\.0\.0\.1:\d+/v1)", out).group(1)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models", timeout=2)


def test_demo_uses_a_configured_engine_instead_of_starting_one(
    localmcp_exe: Path, isolated_env: dict[str, str], engine_env: dict[str, str]
) -> None:
    done = run_demo(localmcp_exe, {**isolated_env, **engine_env}, "--max-tokens", "16")

    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "No engine configured" not in done.stdout
    assert engine_env["LOCALMCP_BACKEND__BASE_URL"] in done.stdout


def test_demo_against_a_dead_engine_fails_with_clear_messages(
    localmcp_exe: Path, isolated_env: dict[str, str], closed_engine_env: dict[str, str]
) -> None:
    done = run_demo(localmcp_exe, {**isolated_env, **closed_engine_env})

    assert done.returncode == 1
    url = closed_engine_env["LOCALMCP_BACKEND__BASE_URL"]
    assert f"error: list_models: cannot connect to the OpenAI-compatible engine at {url}" in (
        done.stdout
    )
    assert "step(s) failed" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr

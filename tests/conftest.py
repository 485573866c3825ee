"""Fixtures shared by the whole suite: the real llama.cpp engine and the installed executable."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localmcp.engine import INSTALL_COMMAND, LlamaEngine, engine_installed


def engine_required() -> bool:
    """True where a missing engine must fail the run (the test script and CI set this)."""
    return os.environ.get("LOCALMCP_REQUIRE_ENGINE") == "1"


def skip_or_fail(message: str) -> None:
    """Skip a test for a missing external part, or fail when the run requires it."""
    if engine_required():
        pytest.fail(f"{message} (LOCALMCP_REQUIRE_ENGINE=1)")
    pytest.skip(message)


@pytest.fixture(name="skip_or_fail", scope="session")
def skip_or_fail_fixture() -> Callable[[str], None]:
    """``skip_or_fail(message)`` for tests that need an external part (engine, Inspector)."""
    return skip_or_fail


@pytest.fixture
def closed_engine_env() -> dict[str, str]:
    """Backend settings naming an engine port that nothing listens on (never a default port)."""
    from localmcp.engine import free_port

    return {
        "LOCALMCP_BACKEND__KIND": "openai",
        "LOCALMCP_BACKEND__BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
    }


@pytest.fixture(scope="session")
def llama_engine() -> Iterator[LlamaEngine]:
    """The real llama.cpp server with SmolLM2-135M-Instruct on a free loopback port."""
    if not engine_installed():
        skip_or_fail(f"the llama.cpp engine is not installed; install it with: {INSTALL_COMMAND}")
    with LlamaEngine() as engine:
        yield engine


@pytest.fixture(scope="session")
def engine_env(llama_engine: LlamaEngine) -> dict[str, str]:
    """Environment variables that point a localmcp process at the real engine."""
    return {
        "LOCALMCP_BACKEND__KIND": "openai",
        "LOCALMCP_BACKEND__BASE_URL": llama_engine.base_url,
        "LOCALMCP_BACKEND__MODEL": llama_engine.model,
    }


@pytest.fixture(scope="session")
def localmcp_exe() -> Path:
    """The ``localmcp`` console script of the interpreter running the tests."""
    exe = Path(sys.executable).parent / ("localmcp.exe" if os.name == "nt" else "localmcp")
    if not exe.is_file():
        pytest.fail(f"{exe} is missing; install the project with: pip install -e '.[dev]'")
    return exe


@pytest.fixture
def isolated_env(tmp_path: Path) -> dict[str, str]:
    """A child-process environment with no user config and its own data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALMCP_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["LOCALMCP_DATA_DIR"] = str(tmp_path / "data")
    return env

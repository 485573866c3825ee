"""``localmcp doctor`` as a user runs it: a real subprocess, real engine, real packages."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

from localmcp.engine import LlamaEngine, free_port


def run_doctor(
    exe: Path, env: dict[str, str], *args: str
) -> tuple[int, dict[str, Any], subprocess.CompletedProcess[str]]:
    done = subprocess.run(
        [str(exe), "doctor", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    return done.returncode, json.loads(done.stdout), done


def test_doctor_reports_the_configured_engine_and_its_model(
    localmcp_exe: Path,
    isolated_env: dict[str, str],
    engine_env: dict[str, str],
    llama_engine: LlamaEngine,
) -> None:
    code, report, done = run_doctor(localmcp_exe, {**isolated_env, **engine_env})

    assert code == 0, done.stderr
    engine = report["Inference engine"]
    assert engine["reachable"]["status"] == "ok"
    assert llama_engine.base_url in engine["reachable"]["value"]
    assert llama_engine.model in engine["models"]["value"]


def test_doctor_fails_when_the_configured_engine_is_down(
    localmcp_exe: Path, isolated_env: dict[str, str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    env = {**isolated_env, "LOCALMCP_BACKEND__KIND": "openai", "LOCALMCP_BACKEND__BASE_URL": url}

    code, report, _ = run_doctor(localmcp_exe, env)

    assert code == 1
    reachable = report["Inference engine"]["reachable"]
    assert reachable["status"] == "fail"
    assert url in reachable["detail"]


def test_doctor_names_the_milvus_lite_build_and_the_config_file(
    localmcp_exe: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "localmcp.toml"
    url = f"http://127.0.0.1:{free_port()}/v1"
    config.write_text(f'[backend]\nkind = "openai"\nbase_url = "{url}"\n', encoding="utf-8")

    _, report, _ = run_doctor(localmcp_exe, isolated_env, "--config", str(config))

    installed = importlib.metadata.version("milvus-lite")
    kind = "native" if installed.startswith("2.") else "pure-Python"
    assert report["Knowledge-base store (Milvus Lite)"]["build"]["value"] == f"{kind} {installed}"
    assert report["Files"]["config file"]["value"] == str(config)
    assert report["Files"]["config file"]["status"] == "ok"
    assert report["Inference engine"]["configured"]["value"] == f"openai: {url}"
    assert report["Python"]["mcp"]["value"] == importlib.metadata.version("mcp")


def test_doctor_prints_a_readable_report_without_a_terminal(
    localmcp_exe: Path, isolated_env: dict[str, str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    env = {**isolated_env, "LOCALMCP_BACKEND__KIND": "openai", "LOCALMCP_BACKEND__BASE_URL": url}
    done = subprocess.run(
        [str(localmcp_exe), "doctor"], capture_output=True, text=True, env=env, timeout=120
    )
    assert "[fail] reachable: no" in done.stdout
    assert "\x1b[" not in done.stdout
    assert "Traceback" not in done.stdout + done.stderr

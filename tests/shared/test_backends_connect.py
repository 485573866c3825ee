"""connect_backend: explicit kinds, and 'auto' probing only ports these tests bound."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
from fixtures.ollama_fixture import FakeOllama, fake_ollama, ollama_server
from fixtures.openai_fixture import FakeOpenAI, fake_openai, openai_server

from localmcp.engine import LlamaEngine
from localmcp.shared.backends import DEFAULT_PROBE_PORTS, connect_backend
from localmcp.shared.config import BackendSettings
from localmcp.shared.errors import BackendUnavailable, ConfigError

__all__ = ["fake_ollama", "fake_openai", "ollama_server", "openai_server"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def no_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's OLLAMA_HOST would be asked first; these tests name their engines."""
    monkeypatch.delenv("OLLAMA_HOST", raising=False)


def test_default_probe_order_is_ollama_then_the_openai_ports() -> None:
    assert DEFAULT_PROBE_PORTS == (11434, 8000, 8080, 1234)


async def test_auto_skips_refused_ports_and_picks_ollama(
    fake_ollama: FakeOllama, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="localmcp.shared.backends"):
        backend = await connect_backend(
            BackendSettings(), probe_ports=[closed_port(), fake_ollama.port]
        )
    assert backend.kind == "ollama"
    assert backend.base_url == fake_ollama.url
    assert any("using Ollama" in r.getMessage() for r in caplog.records)
    await backend.aclose()


async def test_auto_asks_ollama_host_before_the_probe_ports(
    fake_ollama: FakeOllama, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{fake_ollama.port}")
    backend = await connect_backend(BackendSettings(), probe_ports=[fake_openai.port])
    assert (backend.kind, backend.base_url) == ("ollama", fake_ollama.url)
    await backend.aclose()

    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{closed_port()}")  # set, but nothing there
    backend = await connect_backend(BackendSettings(), probe_ports=[fake_openai.port])
    assert backend.kind == "openai"
    await backend.aclose()


async def test_auto_picks_an_openai_compatible_engine(fake_openai: FakeOpenAI) -> None:
    backend = await connect_backend(BackendSettings(), probe_ports=[fake_openai.port])
    assert backend.kind == "openai"
    assert backend.base_url == fake_openai.base_url
    await backend.aclose()


async def test_auto_prefers_the_first_port_that_answers(
    fake_ollama: FakeOllama, fake_openai: FakeOpenAI
) -> None:
    backend = await connect_backend(
        BackendSettings(), probe_ports=[fake_openai.port, fake_ollama.port]
    )
    assert backend.kind == "openai"
    await backend.aclose()


@pytest.mark.engine
async def test_auto_finds_the_real_llama_engine(llama_engine: LlamaEngine) -> None:
    port = urlsplit(llama_engine.base_url).port
    assert port is not None
    backend = await connect_backend(BackendSettings(), probe_ports=[closed_port(), port])
    assert backend.kind == "openai"
    assert [m.name for m in await backend.list_models()] == [llama_engine.model]
    await backend.aclose()


async def test_auto_with_nothing_listening_lists_what_it_tried() -> None:
    ports = [closed_port(), closed_port()]
    with pytest.raises(BackendUnavailable) as info:
        await connect_backend(BackendSettings(probe_timeout=0.2), probe_ports=ports)
    message = str(info.value)
    for port in ports:
        assert f"127.0.0.1:{port} (refused)" in message
    assert "LOCALMCP_BACKEND__KIND" in message


async def test_auto_with_a_base_url_probes_that_address_only(fake_ollama: FakeOllama) -> None:
    backend = await connect_backend(BackendSettings(base_url=fake_ollama.url))
    assert backend.kind == "ollama"
    await backend.aclose()


async def test_explicit_kinds_connect_without_probing(fake_openai: FakeOpenAI) -> None:
    port = closed_port()
    ollama = await connect_backend(BackendSettings(kind="ollama", base_url=f"127.0.0.1:{port}"))
    assert (ollama.kind, ollama.base_url) == ("ollama", f"http://127.0.0.1:{port}")
    openai = await connect_backend(BackendSettings(kind="openai", base_url=fake_openai.base_url))
    assert openai.kind == "openai"
    await ollama.aclose()
    await openai.aclose()


async def test_openai_kind_without_a_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="LOCALMCP_BACKEND__BASE_URL"):
        await connect_backend(BackendSettings(kind="openai"))

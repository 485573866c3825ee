"""Settings: TOML file, environment and defaults in the documented order."""

from __future__ import annotations

from pathlib import Path

import pytest

from localmcp.shared.config import load_settings
from localmcp.shared.errors import ConfigError


def test_defaults_run_without_any_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.backend.kind == "auto"
    assert settings.http.host == "127.0.0.1"
    assert settings.kb.read_only is False


def test_toml_sections_are_read(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[backend]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
        "[kb]\nread_only = true\nchunk_size = 800\n",
        encoding="utf-8",
    )
    settings = load_settings(config)
    assert settings.backend.kind == "openai"
    assert settings.backend.base_url == "http://127.0.0.1:9/v1"
    assert settings.kb.read_only is True
    assert settings.kb.chunk_size == 800


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[backend]\nmodel = "from-file"\n', encoding="utf-8")
    monkeypatch.setenv("LOCALMCP_BACKEND__MODEL", "from-env")
    assert load_settings(config).backend.model == "from-env"


def test_per_user_config_file_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "localmcp").mkdir()
    (tmp_path / "localmcp" / "config.toml").write_text('log_level = "DEBUG"\n', encoding="utf-8")
    assert load_settings().log_level == "DEBUG"


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_settings(tmp_path / "nope.toml")
    assert "--config" in str(info.value)


def test_invalid_value_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[backend]\nretries = -3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"backend\.retries"):
        load_settings(config)


def test_broken_toml_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[backend\nkind = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="valid TOML"):
        load_settings(config)

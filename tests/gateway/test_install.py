"""``localmcp install``: entries merged into real client config files, nothing else lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localmcp.install import CLIENTS, default_config_path, install, localmcp_command
from localmcp.shared.errors import BadInput, ConfigError

USER_CONFIG = {
    "mcpServers": {
        "filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem"]},
        "localmcp-inference": {"command": "/old/path/localmcp", "args": ["serve", "inference"]},
    },
    "globalShortcut": "Ctrl+Space",
}


def test_install_merges_into_existing_claude_config_keeping_other_entries(tmp_path: Path) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(json.dumps(USER_CONFIG), encoding="utf-8")

    result = install("claude", ["inference", "kb"], config_path=path, command="/opt/bin/localmcp")

    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["globalShortcut"] == "Ctrl+Space"
    assert written["mcpServers"]["filesystem"] == USER_CONFIG["mcpServers"]["filesystem"]
    assert written["mcpServers"]["localmcp-inference"] == {
        "command": "/opt/bin/localmcp",
        "args": ["serve", "inference"],
    }
    assert written["mcpServers"]["localmcp-kb"]["args"] == ["serve", "kb"]
    assert result.added == ["localmcp-kb"]
    assert result.replaced == ["localmcp-inference"]
    assert result.backup is not None
    assert json.loads(result.backup.read_text(encoding="utf-8")) == USER_CONFIG


def test_install_for_vscode_uses_servers_key_and_stdio_type(tmp_path: Path) -> None:
    path = tmp_path / ".vscode" / "mcp.json"
    path.parent.mkdir()
    path.write_text(
        json.dumps({"inputs": [{"id": "key", "type": "promptString"}], "servers": {"x": {}}}),
        encoding="utf-8",
    )

    install("vscode", ["inference"], config_path=path, command="/bin/localmcp")

    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["inputs"] == [{"id": "key", "type": "promptString"}]
    assert written["servers"]["x"] == {}
    assert written["servers"]["localmcp-inference"] == {
        "type": "stdio",
        "command": "/bin/localmcp",
        "args": ["serve", "inference"],
    }


def test_install_creates_project_file_for_cursor_under_the_working_folder(tmp_path: Path) -> None:
    result = install("cursor", ["inference"], cwd=tmp_path, command="/bin/localmcp")
    assert result.path == tmp_path / ".cursor" / "mcp.json"
    assert result.backup is None
    assert json.loads(result.path.read_text(encoding="utf-8"))["mcpServers"]["localmcp-inference"]


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(USER_CONFIG), encoding="utf-8")
    before = path.read_bytes()

    result = install("cursor", ["kb"], config_path=path, dry_run=True, command="/bin/localmcp")

    assert path.read_bytes() == before
    assert not result.written
    assert "localmcp-kb" in result.config["mcpServers"]
    assert list(tmp_path.iterdir()) == [path]


def test_config_with_comments_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    text = '{\n  // my servers\n  "servers": {}\n}\n'
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError, match="not plain JSON"):
        install("vscode", ["inference"], config_path=path, command="/bin/localmcp")
    assert path.read_text(encoding="utf-8") == text


def test_servers_section_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"mcpServers": []}', encoding="utf-8")
    with pytest.raises(ConfigError, match="not an object"):
        install("claude", ["inference"], config_path=path, command="/bin/localmcp")


def test_unknown_client_and_unknown_server_are_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="'emacs'"):
        install("emacs", ["inference"], config_path=tmp_path / "x.json", command="c")
    with pytest.raises(BadInput, match="'nope'"):
        install("claude", ["nope"], config_path=tmp_path / "x.json", command="c")
    assert not (tmp_path / "x.json").exists()


def test_claude_config_path_is_the_claude_folder_of_this_platform() -> None:
    path = default_config_path(CLIENTS["claude"])
    assert path.name == "claude_desktop_config.json"
    assert path.parent.name == "Claude"


def test_command_is_the_absolute_localmcp_of_this_environment() -> None:
    command = Path(localmcp_command())
    assert command.is_absolute()
    assert command.parent == Path(sys.executable).parent


def test_cli_install_writes_the_file_and_reports_the_backup(tmp_path: Path) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(json.dumps(USER_CONFIG), encoding="utf-8")
    exe = Path(sys.executable).parent / "localmcp"

    done = subprocess.run(
        [str(exe), "install", "claude", "--config-path", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "updated localmcp-inference" in done.stdout
    assert "previous file saved as" in done.stdout
    entry = json.loads(path.read_text(encoding="utf-8"))["mcpServers"]["localmcp-inference"]
    assert entry["command"] == str(exe)


def test_installing_the_same_entry_again_leaves_the_file_and_makes_no_backup(
    tmp_path: Path,
) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(json.dumps(USER_CONFIG), encoding="utf-8")
    first = install("claude", ["inference"], config_path=path, command="/opt/bin/localmcp")
    assert first.written and first.replaced == ["localmcp-inference"]
    written = path.read_bytes()
    backups = sorted(tmp_path.glob("*.bak"))

    again = install("claude", ["inference"], config_path=path, command="/opt/bin/localmcp")

    assert (again.added, again.replaced, again.unchanged) == ([], [], ["localmcp-inference"])
    assert not again.written and again.backup is None
    assert path.read_bytes() == written
    assert sorted(tmp_path.glob("*.bak")) == backups

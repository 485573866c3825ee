"""``localmcp kb ingest`` at a terminal (a real pseudo-terminal) and in a pipe."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FILES = 30


def _docs(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(FILES):
        (folder / f"note{i:02d}.md").write_text(f"# Note {i}\n\nPuffin number {i}.", "utf-8")
    return folder


def _run_in_terminal(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run a command with stdout and stderr on a pseudo-terminal; its exit code and output."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        args, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the terminal closed: the child has exited
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_ingest_at_a_terminal_draws_a_progress_bar_and_ends_with_the_summary(
    localmcp_exe: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    docs = _docs(tmp_path / "docs")
    env = {**isolated_env, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    env.pop("CI", None)  # rich treats some CI variables as "not interactive"

    code, output = _run_in_terminal([str(localmcp_exe), "kb", "ingest", str(docs)], env)

    assert code == 0, output
    assert "━" in output  # the bar itself
    assert f"{FILES}/{FILES}" in output  # done / total beside it
    assert f"default: {FILES} added, 0 updated" in output


def test_ingest_in_a_pipe_prints_no_bar(
    localmcp_exe: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    docs = _docs(tmp_path / "docs")
    done = subprocess.run(
        [str(localmcp_exe), "kb", "ingest", str(docs)],
        env=isolated_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "━" not in done.stdout + done.stderr
    assert f"default: {FILES} added, 0 updated" in done.stdout


def test_messages_and_text_with_brackets_are_printed_as_they_are(
    localmcp_exe: Path, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "tags.md").write_text("# [/b] closing [red]tags[/red]\n\nkittiwake [/i] text", "utf-8")
    outside = tmp_path / "elsewhere.md"
    outside.write_text("# Elsewhere\n\nnot under the root", "utf-8")

    def kb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(localmcp_exe), "kb", *args],
            env=isolated_env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    refused = kb("ingest", str(outside), "--root", str(notes))
    assert refused.returncode == 1, refused.stderr  # nothing could be read: a failure
    assert "Traceback" not in refused.stdout + refused.stderr
    assert f"outside the allowed roots [{notes}]" in " ".join(refused.stdout.split())

    assert kb("ingest", str(notes)).returncode == 0
    found = kb("search", "kittiwake")
    assert found.returncode == 0, found.stderr
    assert "[/b] closing [red]tags[/red]" in found.stdout
    assert "kittiwake [/i] text" in found.stdout

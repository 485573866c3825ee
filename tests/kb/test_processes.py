"""Real processes on one database: the lock, sharing through serve-db, SIGKILL mid-ingest."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kb_helpers import write

from localmcp.servers.kb.store import Store, lock_is_held, shared_note_path
from localmcp.shared.config import KBSettings

pytestmark = pytest.mark.slow


def _kb(exe: Path, env: dict[str, str], *args: str, timeout: float = 120) -> Any:
    return subprocess.run(
        [str(exe), "kb", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _wait(predicate: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def env(isolated_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**isolated_env, "LOCALMCP_KB__ALLOWED_ROOTS": json.dumps([str(tmp_path)])}


def _db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "kb.db"


def test_second_process_on_the_same_file_fails_fast_naming_the_lock_and_changes_nothing(
    localmcp_exe: Path, env: dict[str, str], tmp_path: Path
) -> None:
    write(tmp_path / "docs" / "a.md", "# A\n\nfirst document")
    write(tmp_path / "more" / "b.md", "# B\n\nsecond document")
    first = _kb(localmcp_exe, env, "ingest", str(tmp_path / "docs"), "--json")
    assert first.returncode == 0, first.stderr

    holder = subprocess.Popen(
        [str(localmcp_exe), "serve", "kb"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: lock_is_held(_db(tmp_path)), "the server to open the database")
        started = time.monotonic()
        second = _kb(localmcp_exe, env, "ingest", str(tmp_path / "more"))
        elapsed = time.monotonic() - started
    finally:
        _stop(holder)

    assert second.returncode == 2
    message = " ".join(second.stderr.split())
    assert f"{_db(tmp_path)}' is open in another process" in message
    assert ".kb.db.lock" in message
    assert "localmcp kb serve-db" in message and "Do not delete the file" in message
    assert "Traceback" not in second.stderr
    assert elapsed < 30  # fails fast, does not wait for the lock

    _wait(lambda: not lock_is_held(_db(tmp_path)), "the server to release the database")
    listing = json.loads(_kb(localmcp_exe, env, "stats", "--json").stdout)
    assert [(c["name"], c["documents"]) for c in listing["collections"]] == [("default", 1)]


def test_serve_db_lets_several_processes_share_one_file(
    localmcp_exe: Path, env: dict[str, str], tmp_path: Path
) -> None:
    for name in ("a", "b"):
        write(tmp_path / name / f"{name}.md", f"# {name}\n\nshared walrus notes {name}")
    server = subprocess.Popen(
        [str(localmcp_exe), "kb", "serve-db"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    note = shared_note_path(_db(tmp_path))
    try:
        _wait(note.exists, "serve-db to start", timeout=60)
        jobs = [
            subprocess.Popen(
                [str(localmcp_exe), "kb", "ingest", str(tmp_path / n), "-k", n, "--json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in ("a", "b")
        ]
        outputs = [job.communicate(timeout=120) for job in jobs]
        assert [job.returncode for job in jobs] == [0, 0], [err for _, err in outputs]
        assert [json.loads(out)["added"] for out, _ in outputs] == [1, 1]

        found = json.loads(_kb(localmcp_exe, env, "search", "walrus", "-k", "*", "--json").stdout)
        assert sorted(h["collection"] for h in found["hits"]) == ["a", "b"]
        listing = json.loads(_kb(localmcp_exe, env, "list", "--json").stdout)
        assert "shared through http://127.0.0.1:" in listing["store"]
    finally:
        server.send_signal(signal.SIGTERM)
        out, _err = server.communicate(timeout=30)
    assert server.returncode == 0, out
    assert not note.exists()

    # Stopped: the file opens directly again, with both knowledge bases in it.
    _wait(lambda: not lock_is_held(_db(tmp_path)), "serve-db to release the file")
    direct = json.loads(_kb(localmcp_exe, env, "list", "--json").stdout)
    assert [c["name"] for c in direct["collections"]] == ["a", "b"]
    assert direct["store"] == str(_db(tmp_path))


def _big_doc(i: int) -> str:
    paragraph = f"Paragraph about topic{i} and the word marker{i}. " * 3
    return f"# Document {i}\n\n" + "\n\n".join(paragraph for _ in range(900))


def test_sigkill_mid_ingest_leaves_no_half_document_and_a_rerun_finishes(
    localmcp_exe: Path, env: dict[str, str], tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    for i in range(4):
        write(docs / f"doc{i}.md", _big_doc(i))
    env = {
        **env,
        "LOCALMCP_LOG_LEVEL": "DEBUG",
        "LOCALMCP_KB__CHUNK_SIZE": "200",
        "LOCALMCP_KB__CHUNK_OVERLAP": "0",
    }
    proc = subprocess.Popen(
        [str(localmcp_exe), "kb", "ingest", str(docs)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed_in: str | None = None
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            line = proc.stderr.readline()
            # First batch of the second document written: kill it there, half-way.
            if "inserted 256/" in line and "doc1.md" in line:
                os.kill(proc.pid, signal.SIGKILL)
                killed_in = line
                break
    finally:
        if proc.poll() is None and killed_in is None:
            proc.kill()
        proc.wait(timeout=30)
    assert killed_in is not None, "the ingest ended before reaching the second document"
    assert proc.returncode == -signal.SIGKILL

    db = _db(tmp_path)
    _wait(lambda: not lock_is_held(db), "the killed process's database server to exit")
    store = Store.open(KBSettings(), db.parent)
    try:
        records = list(store.iter_docs("default"))
        assert [Path(r.source).name for r in records] == ["doc0.md"]
        assert store.pending("default"), "the kill should have interrupted a document write"
        assert store.count_chunks("default") > records[0].chunk_count  # rows of doc1 exist...
        for word in ("marker1", "marker2"):  # ...but nothing of it is visible
            assert (
                store.search("default", mode="keyword", query=word, vector=None, limit=5, expr="")
                == []
            )
        visible = store.search(
            "default", mode="keyword", query="marker0", vector=None, limit=5, expr=""
        )
        assert visible and {h.source for h in visible} == {str(docs / "doc0.md")}
        assert len(store.doc_chunks("default", records[0])) == records[0].chunk_count
    finally:
        store.close()

    rerun = _kb(
        localmcp_exe, {**env, "LOCALMCP_LOG_LEVEL": "WARNING"}, "ingest", str(docs), "--json"
    )
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout)
    assert (result["added"], result["unchanged"], result["failed"]) == (3, 1, 0)
    assert result["recovered"] == 1
    stats = json.loads(_kb(localmcp_exe, env, "stats", "--json").stdout)["collections"][0]
    assert stats["documents"] == 4 and stats["hidden_chunks"] == 0

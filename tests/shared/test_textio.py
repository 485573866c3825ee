"""Tests for safe text input: allowed roots, encodings, size limits and normalisation."""

from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localmcp.shared.errors import BadInput, NotFound
from localmcp.shared.textio import (
    MIB,
    clean_text,
    content_hash,
    decode_bytes,
    read_text_file,
    resolve_under_roots,
)

CHINESE = (
    "Debian 是一个自由的操作系统。它使用 Linux 内核，并提供了数以万计的软件包！"
    "如何安装软件包？请使用 apt-get install 命令；更多信息参见手册……"
)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A root with a file and a sub-folder, plus a secret file outside the root."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "x").mkdir()
    (root / "a" / "b.md").write_text("# hello\n", encoding="utf-8")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("secret\n", encoding="utf-8")
    return {"root": root, "file": root / "a" / "b.md", "secret": outside / "secret.md"}


# --- resolve_under_roots ---


def test_spellings_of_one_file_resolve_to_one_path(tree: dict[str, Path]) -> None:
    root = tree["root"]
    spellings = [
        tree["file"],
        f"{root}/a/./b.md",
        f"{root}//a//b.md",
        f"{root}/x/../a/b.md",
        "a/b.md",
        "./a/../a/b.md",
    ]
    resolved = {resolve_under_roots(s, [root]) for s in spellings}
    assert resolved == {tree["file"].resolve()}


def test_symlink_to_a_file_inside_the_root_resolves_to_its_target(tree: dict[str, Path]) -> None:
    link = tree["root"] / "alias.md"
    link.symlink_to(tree["file"])
    assert resolve_under_roots(link, [tree["root"]]) == tree["file"].resolve()


def test_root_given_through_a_symlink_still_contains_its_files(
    tree: dict[str, Path], tmp_path: Path
) -> None:
    root_link = tmp_path / "root-link"
    root_link.symlink_to(tree["root"], target_is_directory=True)
    assert resolve_under_roots(root_link / "a" / "b.md", [root_link]) == tree["file"].resolve()


def test_symlink_escaping_the_root_is_refused(tree: dict[str, Path]) -> None:
    link = tree["root"] / "escape.md"
    link.symlink_to(tree["secret"])
    with pytest.raises(BadInput) as info:
        resolve_under_roots(link, [tree["root"]])
    message = str(info.value)
    assert "outside the allowed roots" in message
    assert str(tree["root"].resolve()) in message
    assert "kb.allowed_roots" in message and "--root" in message


def test_dangling_symlink_pointing_out_is_refused_not_reported_missing(
    tree: dict[str, Path], tmp_path: Path
) -> None:
    link = tree["root"] / "dangling.md"
    link.symlink_to(tmp_path / "nowhere" / "file.md")
    with pytest.raises(BadInput, match="outside the allowed roots"):
        resolve_under_roots(link, [tree["root"]])


def test_dot_dot_escape_is_refused(tree: dict[str, Path]) -> None:
    with pytest.raises(BadInput, match="outside the allowed roots"):
        resolve_under_roots("../outside/secret.md", [tree["root"]])
    with pytest.raises(BadInput, match="outside the allowed roots"):
        resolve_under_roots(f"{tree['root']}/a/../../outside/secret.md", [tree["root"]])


def test_absolute_path_elsewhere_is_refused_with_the_path_named(tree: dict[str, Path]) -> None:
    with pytest.raises(BadInput) as info:
        resolve_under_roots(tree["secret"], [tree["root"]])
    assert str(tree["secret"]) in str(info.value)


def test_sibling_folder_sharing_the_root_prefix_is_outside(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    sibling = tmp_path / "docs-private"
    sibling.mkdir()
    (sibling / "s.md").write_text("s\n", encoding="utf-8")
    with pytest.raises(BadInput):
        resolve_under_roots(sibling / "s.md", [root])


def test_root_itself_resolves_with_or_without_a_trailing_slash(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    assert resolve_under_roots(root, [root]) == root.resolve()
    assert resolve_under_roots(f"{root}/", [root]) == root.resolve()


@pytest.mark.parametrize("bad", ["", "a\x00b.md"])
def test_empty_or_nul_path_is_bad_input(tree: dict[str, Path], bad: str) -> None:
    with pytest.raises(BadInput, match="invalid path"):
        resolve_under_roots(bad, [tree["root"]])


def test_missing_file_inside_a_root_is_not_found(tree: dict[str, Path]) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        resolve_under_roots(tree["root"] / "a" / "missing.md", [tree["root"]])


def test_no_roots_configured_is_a_clear_error(tree: dict[str, Path]) -> None:
    with pytest.raises(BadInput, match="no allowed roots") as info:
        resolve_under_roots(tree["file"], [])
    assert "kb.allowed_roots" in str(info.value)


def test_second_root_is_searched_for_relative_paths(tree: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "only-here.md").write_text("x\n", encoding="utf-8")
    found = resolve_under_roots("only-here.md", [tree["root"], other])
    assert found == (other / "only-here.md").resolve()


# --- decode_bytes ---


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [
        ("utf-8", b""),
        ("utf-8", b"\xef\xbb\xbf"),
        ("utf-16-le", b"\xff\xfe"),
        ("utf-16-be", b"\xfe\xff"),
        ("utf-32-le", b"\xff\xfe\x00\x00"),
    ],
)
def test_unicode_encodings_decode_with_and_without_bom(encoding: str, bom: bytes) -> None:
    text = "# 标题 Title\n\n" + CHINESE + "\nCafé — naïve\n"
    assert decode_bytes(bom + text.encode(encoding), source="t.md") == text


@pytest.mark.parametrize("encoding", ["gb18030", "gbk"])
def test_chinese_legacy_encodings_decode(encoding: str) -> None:
    text = "# 常见问题\n\n" + CHINESE * 3 + "\n"
    assert decode_bytes(text.encode(encoding), source="faq.txt") == text


@pytest.mark.parametrize("short", ["你好，世界", "中文", "编码测试：GB18030 与 GBK。"])
def test_short_gbk_text_is_not_mistaken_for_korean_or_big5(short: str) -> None:
    assert decode_bytes(short.encode("gbk"), source="short.txt") == short


def test_gb18030_four_byte_characters_decode() -> None:
    text = "罕见字：𠀀𪚥 and emoji 😀 in GB18030。"
    assert decode_bytes(text.encode("gb18030"), source="rare.txt") == text


def test_western_legacy_text_decodes_as_cp1252() -> None:
    text = "Café crème brûlée à la française, déjà vu. Ça marche très bien.\n"
    assert decode_bytes(text.encode("cp1252"), source="fr.txt") == text


def test_invalid_utf8_is_refused_with_the_byte_offset() -> None:
    good = ("Überschrift — 标题\n" * 5).encode()
    data = good + b"\xc3\x28 broken \xff\n" + good
    with pytest.raises(BadInput, match="invalid UTF-8") as info:
        decode_bytes(data, source="broken.md")
    assert f"byte {len(good)}" in str(info.value)


def test_binary_data_is_refused_as_binary() -> None:
    rng = random.Random(7)
    png = b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(4000))
    with pytest.raises(BadInput, match="looks binary"):
        decode_bytes(png, source="image.md")


def test_nul_heavy_data_is_refused_as_binary() -> None:
    with pytest.raises(BadInput, match="looks binary"):
        decode_bytes(b"text\x00\x00\x00\x00more\x00\x00text" * 10, source="nul.txt")


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_recognised_by_its_nul_pattern(encoding: str) -> None:
    text = "# Notes\nPlain ASCII mostly, with 中文 too.\n" * 5
    assert decode_bytes(text.encode(encoding), source="u16.txt") == text


def test_broken_utf16_after_a_bom_is_refused() -> None:
    with pytest.raises(BadInput, match="byte-order mark"):
        decode_bytes(b"\xff\xfe" + "ok".encode("utf-16-le") + b"\x00\xd8", source="u16.txt")


# --- read_text_file ---


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("bom.md", b"\xef\xbb\xbf# Title\r\nline\r\n", "# Title\nline\n"),
        ("u16.txt", b"\xff\xfe" + "第一行\r\n第二行\n".encode("utf-16-le"), "第一行\n第二行\n"),
        ("gb.txt", ("# 标题\n" + CHINESE).encode("gb18030"), "# 标题\n" + CHINESE),
    ],
)
def test_read_text_file_decodes_and_normalises(
    tmp_path: Path, name: str, data: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    assert read_text_file(path, max_bytes=MIB) == expected


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.md"
    path.write_bytes(b"")
    with pytest.raises(BadInput, match="empty file"):
        read_text_file(path, max_bytes=MIB)


def test_whitespace_only_file_is_refused_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "blank.md"
    path.write_bytes(b" \n\t\r\n  \n")
    with pytest.raises(BadInput, match="empty file"):
        read_text_file(path, max_bytes=MIB)


def test_file_over_the_size_limit_is_refused_naming_the_limit_and_setting(tmp_path: Path) -> None:
    path = tmp_path / "huge.md"
    with path.open("wb") as handle:  # 200 MiB, sparse: only stat() may look at it
        handle.truncate(200 * MIB)
    with pytest.raises(BadInput) as info:
        read_text_file(path, max_bytes=50 * MIB)
    message = str(info.value)
    assert "200.0 MiB" in message and "50 MiB limit" in message
    assert "kb.max_file_mb" in message


def test_gzip_text_is_read_transparently(tmp_path: Path) -> None:
    path = tmp_path / "faq.txt.gz"
    path.write_bytes(gzip.compress(CHINESE.encode("utf-8")))
    assert read_text_file(path, max_bytes=MIB) == CHINESE


def test_gzip_that_decompresses_past_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.txt.gz"
    path.write_bytes(gzip.compress(b"a" * (3 * MIB)))
    assert path.stat().st_size < MIB
    with pytest.raises(BadInput, match="decompresses to over") as info:
        read_text_file(path, max_bytes=MIB)
    assert "kb.max_file_mb" in str(info.value)


def test_corrupt_gzip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.md.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage-that-is-not-deflate")
    with pytest.raises(BadInput, match="not a valid gzip file"):
        read_text_file(path, max_bytes=MIB)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        read_text_file(tmp_path / "nope.md", max_bytes=MIB)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "locked.md"
    path.write_text("x\n", encoding="utf-8")
    path.chmod(0)
    with pytest.raises(BadInput, match="cannot read"):
        read_text_file(path, max_bytes=MIB)


# --- clean_text and content_hash ---


def test_clean_text_normalises_newlines_and_drops_nul_and_controls() -> None:
    assert clean_text("\ufeffa\r\nb\rc\x00d\x07e\x0cf\u2028g") == "a\nb\ncde\nf\ng"


def test_clean_text_replaces_lone_surrogates_and_joins_pairs() -> None:
    assert clean_text("a\ud800b") == "a\ufffdb"
    assert clean_text("x\udfffy") == "x\ufffdy"
    assert clean_text("\ud83d\ude00") == "😀"


@given(st.text())
def test_clean_text_is_idempotent_and_encodable(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once
    once.encode("utf-8")  # never raises: no surrogates left
    assert "\x00" not in once and "\r" not in once


def test_content_hash_ignores_newline_style_and_bom() -> None:
    assert content_hash("a\r\nb\n") == content_hash("\ufeffa\nb\n")
    assert content_hash("a\nb\n") != content_hash("a\nc\n")
    assert len(content_hash("x")) == 64

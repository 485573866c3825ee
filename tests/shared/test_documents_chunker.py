"""Tests for the chunker: bounded sizes, no text lost, heading paths, CJK and English sentences."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localmcp.shared.documents import Chunk, Document, chunk_document, document_from_text
from localmcp.shared.errors import BadInput

CJK_SENTENCE_END = "。！？；…"


def assert_invariants(doc: Document, chunks: list[Chunk], size: int, overlap: int) -> None:
    """Every chunk is a bounded exact slice, in order, and together they cover the text."""
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert 0 < len(chunk.text) <= size
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip()
    for before, after in itertools.pairwise(chunks):
        assert after.start > before.start
        assert after.end > before.end
        assert before.end - after.start <= overlap  # shared characters, if any
    # Concatenating the chunks minus their overlaps gives back the text (whitespace aside).
    rebuilt: list[str] = []
    covered = 0
    for chunk in chunks:
        rebuilt.append(doc.text[max(covered, chunk.start) : chunk.end])
        covered = max(covered, chunk.end)
    assert "".join("".join(rebuilt).split()) == "".join(doc.text.split())


def chunk_text(text: str, size: int, overlap: int, fmt: str = "markdown") -> list[Chunk]:
    doc = document_from_text(text, source="test", title="T", format=fmt)  # type: ignore[arg-type]
    chunks = chunk_document(doc, size=size, overlap=overlap)
    assert_invariants(doc, chunks, size, overlap)
    return chunks


# --- properties ---

_CHARS = "abcdefghij ABC 中文字符汉语测试 。，！？；、…：,.;:!? \n\n\n#`*-1"
_ALPHABET = st.sampled_from([*_CHARS, "```", "# ", "\n## "])
_TEXT = st.lists(_ALPHABET, min_size=1, max_size=400).map("".join).filter(lambda t: t.strip())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=_TEXT,
    size=st.integers(min_value=1, max_value=120),
    overlap_ratio=st.floats(min_value=0, max_value=0.99),
    fmt=st.sampled_from(["markdown", "text"]),
)
def test_chunks_are_bounded_exact_slices_that_cover_the_text(
    text: str, size: int, overlap_ratio: float, fmt: str
) -> None:
    chunk_text(text, size, int(size * overlap_ratio), fmt)


@settings(max_examples=60, deadline=None)
@given(
    sentences=st.lists(
        st.text(
            alphabet="的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经",
            min_size=1,
            max_size=80,
        ).map(lambda s: s + "。"),
        min_size=1,
        max_size=300,
    ),
    size=st.integers(min_value=20, max_value=400),
)
def test_chinese_paragraph_without_newlines_is_cut_at_sentence_ends(
    sentences: list[str], size: int
) -> None:
    text = "".join(sentences)
    chunks = chunk_text(text, size, size // 8)
    if max(len(s) for s in sentences) <= size - size // 8:
        # Sentences fit, so no chunk needs a cut inside one.
        assert all(c.text.endswith("。") for c in chunks)


# --- CJK ---


def _long_chinese(chars: int) -> str:
    base = (
        "Debian 计划是一个致力于创建自由操作系统的合作组织，我们所创建的这个操作系统名为 "
        "Debian GNU/Linux。它提供了超过五万九千个软件包！用户可以自由选择需要的软件；"
        "这就是自由软件的力量吗？当然是……"
    )
    return (base * (chars // len(base) + 1))[:chars]


def test_twenty_thousand_character_chinese_paragraph_becomes_many_bounded_chunks() -> None:
    text = _long_chinese(20_000)
    assert "\n" not in text
    chunks = chunk_text(text, 1200, 150)
    assert len(chunks) >= 17
    assert max(len(c.text) for c in chunks) <= 1200
    ends = [c.text[-1] for c in chunks[:-1]]
    assert sum(e in CJK_SENTENCE_END for e in ends) >= 0.9 * len(ends)


def test_chinese_without_any_punctuation_is_still_bounded() -> None:
    text = "汉" * 20_000
    chunks = chunk_text(text, 1000, 100)
    assert len(chunks) >= 20
    assert all(len(c.text) <= 1000 for c in chunks)


def test_consecutive_chunks_share_the_overlap_at_a_sentence_start() -> None:
    chunks = chunk_text(_long_chinese(6_000), 600, 100)
    for before, after in itertools.pairwise(chunks):
        shared = before.end - after.start
        assert 0 < shared <= 100
        # The repeated part starts right after a sentence or clause mark of the previous chunk.
        assert before.text[len(before.text) - shared - 1] in "。！？；…，、： "


def test_mixed_chinese_and_english_sentences_are_cut_at_both_kinds_of_end() -> None:
    unit = (
        "使用 apt-get update 更新软件包列表。Then run apt-get upgrade to install updates. "
        "如果出现错误，请查看 /var/log/apt/history.log 文件！Is that all? 是的。"
    )
    chunks = chunk_text(unit * 80, 300, 40)
    assert len(chunks) > 10
    for chunk in chunks[:-1]:
        assert chunk.text[-1] in "。！.?", chunk.text[-20:]


def test_english_text_is_cut_at_sentence_ends() -> None:
    sentence = "The package manager resolves dependencies before it installs anything. "
    chunks = chunk_text(sentence * 100, 500, 60, fmt="text")
    assert all(c.text.endswith("anything.") for c in chunks)


def test_english_word_without_spaces_is_hard_cut() -> None:
    chunks = chunk_text("x" * 2500, 1000, 0, fmt="text")
    assert [len(c.text) for c in chunks] == [1000, 1000, 500]


# --- headings ---

FAQ_MD = """# Debian FAQ

## Installing

### How do I install a package?

Use apt. {install}

### How do I remove a package?

Use apt remove. It keeps configuration files.

```sh
# apt purge foo
# this is a comment, not a heading
```

## Upgrading

Read the release notes first. {upgrade}
"""


def test_every_chunk_carries_its_heading_path() -> None:
    text = FAQ_MD.format(install="Long answer. " * 60, upgrade="Upgrade advice. " * 5)
    chunks = chunk_text(text, 300, 40)
    paths = {c.heading_path for c in chunks}
    assert paths == {
        ("Debian FAQ", "Installing", "How do I install a package?"),
        ("Debian FAQ", "Installing", "How do I remove a package?"),
        ("Debian FAQ", "Upgrading"),
    }
    # Tiny parents ("# Debian FAQ", "## Installing") open the first sub-section's chunk.
    assert chunks[0].text.startswith("# Debian FAQ\n\n## Installing\n\n### How do I install")
    install = [c for c in chunks if c.heading_path[-1] == "How do I install a package?"]
    assert len(install) > 2


def test_hash_lines_in_code_fences_are_not_headings() -> None:
    chunks = chunk_text(FAQ_MD.format(install="", upgrade=""), 1000, 100)
    assert not any("apt purge" in p or "comment" in p for c in chunks for p in c.heading_path)
    remove = next(c for c in chunks if c.heading_path[-1] == "How do I remove a package?")
    assert "# this is a comment, not a heading" in remove.text


def test_chunks_never_cross_into_a_sibling_section() -> None:
    text = FAQ_MD.format(install="Answer. " * 10, upgrade="Advice. " * 10)
    for chunk in chunk_text(text, 2000, 100):
        prose = re.sub(r"```.*?```", "", chunk.text, flags=re.S)
        sub_headings = re.findall(r"^#{1,6} .*$", prose, flags=re.M)
        own = {f"{'#' * (i + 1)} {h}" for i, h in enumerate(chunk.heading_path)}
        assert set(sub_headings) <= own, (sub_headings, chunk.heading_path)


def test_large_sibling_sections_are_not_merged_even_when_they_would_fit() -> None:
    text = "## One\n\n" + "First section text. " * 10 + "\n\n## Two\n\n" + "Second. " * 10
    chunks = chunk_text(text, 5000, 0)
    assert [c.heading_path for c in chunks] == [("One",), ("Two",)]


def test_text_before_the_first_heading_takes_the_title_as_its_path() -> None:
    text = "Intro paragraph that is long enough to stand alone as a chunk of its own. " * 3
    text += "\n\n# Chapter\n\nBody.\n"
    doc = document_from_text(text, source="s", title="My title")
    chunks = chunk_document(doc, size=1000, overlap=0)
    assert chunks[0].heading_path == ("My title",)
    assert chunks[-1].heading_path == ("Chapter",)


def test_plain_text_chunks_carry_the_title() -> None:
    doc = document_from_text("Para one.\n\nPara two.\n", source="s", title="Notes", format="text")
    assert {c.heading_path for c in chunk_document(doc, size=100, overlap=10)} == {("Notes",)}


def test_pdf_pages_are_sections_named_by_page_number() -> None:
    pages_text = ["Page one text. " * 30, "Page two text. " * 30]
    text = pages_text[0].strip() + "\n\n" + pages_text[1].strip()
    doc = Document(
        source="x.pdf",
        title="X",
        format="pdf",
        text=text,
        modified_at=None,
        content_hash="h",
        pages=[(1, 0), (3, len(pages_text[0].strip()) + 2)],
    )
    chunks = chunk_document(doc, size=200, overlap=20)
    assert_invariants(doc, chunks, 200, 20)
    assert {c.heading_path for c in chunks} == {("page 1",), ("page 3",)}
    assert all("two" not in c.text for c in chunks if c.heading_path == ("page 1",))


# --- parameters ---


@pytest.mark.parametrize(("size", "overlap"), [(100, 100), (100, 250), (100, -1), (0, 0)])
def test_bad_size_or_overlap_is_refused_clearly(size: int, overlap: int) -> None:
    doc = document_from_text("some text", source="s")
    with pytest.raises(BadInput, match=r"chunk (size|overlap)"):
        chunk_document(doc, size=size, overlap=overlap)


def test_overlap_above_half_the_size_still_makes_progress() -> None:
    chunks = chunk_text(_long_chinese(5_000), 100, 99)
    # Overlap is capped at half the size, so chunks advance by sentences, not by a character.
    assert len(chunks) <= 5_000 // 25
    assert all(a.end - b.start <= 50 for a, b in itertools.pairwise(chunks))


def test_zero_overlap_gives_disjoint_chunks() -> None:
    chunks = chunk_text(_long_chinese(3_000), 300, 0)
    assert all(b.start >= a.end for a, b in itertools.pairwise(chunks))

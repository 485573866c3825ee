"""Paths to the real Debian documentation fetched by ``scripts/fetch-corpora``.

The cache (``$LOCALMCP_CORPORA``, default ``~/.cache/localmcp/corpora``) holds each package
unpacked under its own name:

- ``debian-faq/usr/share/doc/debian/FAQ/`` — the English FAQ: one XHTML page per chapter
  (``basic-defs.en.html`` ... ``faqinfo.en.html``, UTF-8, DocBook output with ``<h1>`` for the
  chapter and ``<h2>``/``<h3>`` for questions), ``index.en.html`` (table of contents),
  symlinks without the language (``basic-defs.html -> basic-defs.en.html``), the whole FAQ as
  gzip-compressed plain text (``debian-faq.en.txt.gz``) and as a gzip-compressed 73-page PDF
  with a text layer (``debian-faq.en.pdf.gz``).
- ``debian-faq-zh-cn/usr/share/doc/debian/FAQ/zh-cn/`` — the same chapters in Simplified
  Chinese (``basic-defs.zh-cn.html`` ...); one level up, ``debian-faq.zh-cn.txt.gz`` and a
  one-page placeholder PDF that only says the Chinese PDF is not available.

Every helper returns an existing path; when the cache is missing it skips the test, or fails
it with the command to run when ``LOCALMCP_REQUIRE_ENGINE=1`` (as in CI).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pytest

Lang = Literal["en", "zh-cn"]

FETCH_COMMAND = "scripts/fetch-corpora"
# The FAQ's chapters in order; file names are "<chapter>.<lang>.html".
CHAPTERS = (
    "basic-defs",
    "getting-debian",
    "choosing",
    "compatibility",
    "software",
    "ftparchives",
    "pkg-basics",
    "pkgtools",
    "uptodate",
    "kernel",
    "customizing",
    "support",
    "contributing",
    "redistributing",
    "nextrelease",
    "faqinfo",
)
_PACKAGE = {"en": "debian-faq", "zh-cn": "debian-faq-zh-cn"}


def corpora_dir() -> Path:
    """The cache folder ``scripts/fetch-corpora`` fills (it may not exist yet)."""
    default = Path.home() / ".cache" / "localmcp" / "corpora"
    return Path(os.environ.get("LOCALMCP_CORPORA") or default)


def require(path: Path) -> Path:
    """``path`` if it exists; else skip, or fail when ``LOCALMCP_REQUIRE_ENGINE=1``."""
    if path.exists():
        return path
    message = f"Debian corpora missing ({path}); fetch them with: {FETCH_COMMAND}"
    if os.environ.get("LOCALMCP_REQUIRE_ENGINE") == "1":
        pytest.fail(f"{message} (LOCALMCP_REQUIRE_ENGINE=1)")
    pytest.skip(message)


def _faq_root(lang: Lang) -> Path:
    return corpora_dir() / _PACKAGE[lang] / "usr" / "share" / "doc" / "debian" / "FAQ"


def faq_dir(lang: Lang = "en") -> Path:
    """The folder holding the FAQ's HTML chapters in ``lang`` (Chinese: its ``zh-cn/``)."""
    root = _faq_root(lang)
    return require(root / "zh-cn" if lang == "zh-cn" else root)


def faq_chapter(chapter: str, lang: Lang = "en") -> Path:
    """One chapter's HTML page, e.g. ``faq_chapter("pkgtools", "zh-cn")``."""
    if chapter not in (*CHAPTERS, "index"):
        raise ValueError(f"unknown FAQ chapter {chapter!r}; known: {', '.join(CHAPTERS)}")
    return require(faq_dir(lang) / f"{chapter}.{lang}.html")


def faq_chapters(lang: Lang = "en") -> list[Path]:
    """All chapter pages in ``lang``, in the FAQ's order (the index page excluded)."""
    return [faq_chapter(chapter, lang) for chapter in CHAPTERS]


def faq_alias(chapter: str) -> Path:
    """The English chapter's second name, a symlink without the language tag."""
    faq_chapter(chapter, "en")
    return require(faq_dir("en") / f"{chapter}.html")


def faq_text(lang: Lang = "en") -> Path:
    """The whole FAQ as gzip-compressed plain text (``.txt.gz``)."""
    return require(_faq_root(lang) / f"debian-faq.{lang}.txt.gz")


def faq_pdf() -> Path:
    """The English FAQ as a gzip-compressed PDF (``.pdf.gz``, 73 pages, text layer)."""
    return require(_faq_root("en") / "debian-faq.en.pdf.gz")

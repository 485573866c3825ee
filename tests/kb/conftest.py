"""Fixtures for the kb tests."""

from __future__ import annotations

from pathlib import Path

import corpora
import pytest

# --- Real Debian documentation (see tests/corpora.py for what lies where) ---


@pytest.fixture(scope="session")
def faq_en_dir() -> Path:
    """Folder of the English Debian FAQ: ``<chapter>.en.html`` pages and their aliases."""
    return corpora.faq_dir("en")


@pytest.fixture(scope="session")
def faq_zh_dir() -> Path:
    """Folder of the Simplified Chinese Debian FAQ: ``<chapter>.zh-cn.html`` pages."""
    return corpora.faq_dir("zh-cn")


@pytest.fixture(scope="session")
def faq_pdf() -> Path:
    """The English Debian FAQ as a real 73-page PDF, gzip-compressed (``.pdf.gz``)."""
    return corpora.faq_pdf()


# --- end of corpus fixtures ---

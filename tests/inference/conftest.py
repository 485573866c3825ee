"""Inference tests build Settings themselves: keep a developer's LOCALMCP_* variables out."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_localmcp_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LOCALMCP_") and name != "LOCALMCP_REQUIRE_ENGINE":
            monkeypatch.delenv(name)

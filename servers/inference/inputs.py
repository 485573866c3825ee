"""Check and clean what clients send before it reaches an engine.

Text is cleaned rather than refused where that is safe: lone UTF-16 surrogates (which JSON
escapes can carry but UTF-8 cannot encode) become U+FFFD. Sizes are refused with the setting
that allows more. Malformed conversations are refused with what was wrong and where.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

from localmcp.shared.backends import ChatMessage
from localmcp.shared.backends.base import Role
from localmcp.shared.errors import BadInput

from .models import ROLES, MessageIn

_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
LIMIT_SETTING = "inference.max_prompt_chars (LOCALMCP_INFERENCE__MAX_PROMPT_CHARS)"


def clean_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD; everything else (CJK, emoji) kept."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _check_size(total: int, limit: int, what: str) -> None:
    if total > limit:
        raise BadInput(
            f"{what} is {total:,} characters; the limit is {limit:,} ({LIMIT_SETTING}).",
            hint=f"Send less text, or raise {LIMIT_SETTING}.",
        )


def build_messages(
    messages: Sequence[MessageIn] | None,
    prompt: str | None,
    system: str | None,
    *,
    max_chars: int,
) -> list[ChatMessage]:
    """The conversation to send: ``system`` first, then ``messages``, then ``prompt`` as user."""
    if messages is None and prompt is None:
        raise BadInput(
            "neither messages nor prompt was given.",
            hint='Pass prompt="..." for one question, or messages=[{"role": "user", '
            '"content": "..."}] for a conversation.',
        )
    if messages is not None and not messages and prompt is None:
        raise BadInput(
            "messages is an empty list.",
            hint='Add at least one message, e.g. {"role": "user", "content": "Hello"}.',
        )
    result: list[ChatMessage] = []
    if system is not None:
        result.append(ChatMessage(role="system", content=clean_text(system)))
    for index, message in enumerate(messages or []):
        if message.role not in ROLES:
            raise BadInput(
                f"messages[{index}] has role {message.role!r}.",
                hint=f"Use one of: {', '.join(ROLES)}.",
            )
        role = cast(Role, message.role)
        result.append(ChatMessage(role=role, content=clean_text(message.content)))
    if prompt is not None:
        result.append(ChatMessage(role="user", content=clean_text(prompt)))
    _check_size(sum(len(m.content) for m in result), max_chars, "the conversation")
    return result


def check_prompt(prompt: str, system: str | None, *, max_chars: int) -> tuple[str, str | None]:
    """``prompt`` and ``system`` cleaned and within the size limit."""
    _check_size(len(prompt) + len(system or ""), max_chars, "the prompt")
    return clean_text(prompt), clean_text(system) if system is not None else None


def check_texts(texts: Sequence[str], *, max_chars: int, max_count: int = 2048) -> list[str]:
    """Texts to embed: at least one, at most ``max_count``, within the size limit, cleaned."""
    if not texts:
        raise BadInput("texts is empty.", hint='Pass at least one text, e.g. ["hello"].')
    if len(texts) > max_count:
        raise BadInput(
            f"{len(texts)} texts in one call; at most {max_count} are accepted.",
            hint="Split the batch into several calls.",
        )
    _check_size(sum(len(t) for t in texts), max_chars, "the texts together")
    return [clean_text(t) for t in texts]

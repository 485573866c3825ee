"""Safe text input: allowed roots, size limits, encoding detection and text normalisation.

Everything that reads a user's file goes through here, so the rules are the same for every
server: a path must resolve (symlinks followed) to a place under an allowed root, a file is
refused before it is read when it is over the size limit, bytes are decoded as UTF-8 (with or
without BOM), UTF-16/32 with BOM or a detected legacy encoding (GB18030/GBK first for Chinese),
and the resulting text is normalised (newlines, NUL and other control characters, lone
surrogates) so that its hash is stable.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import logging
import os
import re
import stat
import zlib
from collections.abc import Sequence
from pathlib import Path

from .errors import BadInput, NotFound

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
SIZE_SETTING = "kb.max_file_mb"
ROOTS_HINT = (
    "Allow its folder with kb.allowed_roots in the config file "
    "(or LOCALMCP_KB__ALLOWED_ROOTS); `localmcp kb ingest` also takes --root FOLDER."
)

# How much of a file is inspected to decide whether it is binary.
_SNIFF_BYTES = 8192
# Byte-order marks, longest first (UTF-32 LE starts like UTF-16 LE).
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Encodings charset-normalizer may propose that are never right for BOM-less text files here.
_NEVER_GUESS = ("utf_16", "utf_32", "utf_7")
# Among equally good guesses, the one a Western or Chinese user most likely wrote.
_PREFERRED = ("gb18030", "cp1252", "cp1251", "cp932", "big5", "euc_kr")
_CHAOS_TOLERANCE = 0.1
# Control bytes that do not occur in text (everything below 0x20 but tab, LF, FF, CR, ESC).
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))

_NEWLINES = re.compile(r"\r\n?|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_JUNK = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\ufffe\uffff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Han ideographs, CJK punctuation, fullwidth forms, and the dashes, quotes and ellipsis
# GB18030 text uses: what GB18030-decoded Chinese consists of.
_CJK = re.compile(
    "[\u4e00-\u9fff\u3400-\u4dbf\u3000-\u303f\uff00-\uffef\u2010-\u2027\U00020000-\U0002ffff]"
)
_PLAUSIBILITY_CHARS = 200_000


def resolve_under_roots(path: str | Path, roots: Sequence[Path]) -> Path:
    """Return the canonical real path of ``path`` if it lies under one of ``roots``.

    Symlinks are followed and spelling is normalised, so ``a/./b``, ``a//b`` and ``x/../a/b``
    reaching one file give one ``Path``. A relative path is taken relative to the roots, in
    order (the first under which it exists wins). Raises ``BadInput`` when the real path is
    outside every root (``..`` escapes, absolute paths elsewhere, symlinks pointing out) and
    ``NotFound`` when it is inside but does not exist.
    """
    if not roots:
        raise BadInput(
            f"cannot read {str(path)!r}: no allowed roots are configured.",
            hint=ROOTS_HINT,
            path=str(path),
        )
    real_roots = [Path(os.path.realpath(Path(r).expanduser())) for r in roots]
    raw = Path(path).expanduser()
    if str(path) == "" or "\x00" in str(path):
        raise BadInput(f"invalid path {str(path)!r}.", hint="Pass a file or folder path.")

    if raw.is_absolute():
        candidates = [Path(os.path.realpath(raw))]
    else:
        candidates = [Path(os.path.realpath(root / raw)) for root in real_roots]

    inside = [c for c in candidates if any(_is_under(c, r) for r in real_roots)]
    if not inside:
        shown = ", ".join(str(r) for r in real_roots)
        resolved = f" (it resolves to {str(candidates[0])!r})" if raw.is_absolute() else ""
        raise BadInput(
            f"path {str(path)!r} is outside the allowed roots [{shown}]{resolved}.",
            hint=ROOTS_HINT,
            path=str(path),
            roots=[str(r) for r in real_roots],
        )
    for candidate in inside:
        if candidate.exists():
            return candidate
    raise NotFound(
        f"path {str(path)!r} does not exist (looked for {', '.join(map(str, inside))}).",
        hint="Check the spelling; relative paths are taken relative to the allowed roots.",
        path=str(path),
    )


def _is_under(path: Path, root: Path) -> bool:
    """``path`` is ``root`` or inside it (case-folded where the file system folds case)."""
    return Path(os.path.normcase(path)).is_relative_to(Path(os.path.normcase(root)))


def clean_text(text: str) -> str:
    """Normalise text: newlines to LF, lone surrogates to U+FFFD, NUL and control chars removed."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if _SURROGATE.search(text):
        # Valid pairs (e.g. from JSON "\ud83d\ude00") join; lone halves become U+FFFD.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    text = _NEWLINES.sub("\n", text)
    return _JUNK.sub("", text)


def content_hash(text: str) -> str:
    """SHA-256 (hex) of the normalised text, the identity used for dedup."""
    return hashlib.sha256(clean_text(text).encode("utf-8", "surrogatepass")).hexdigest()


def looks_binary(data: bytes) -> bool:
    """True when the start of ``data`` has NULs or control bytes that text never has."""
    sample = data[:_SNIFF_BYTES]
    if not sample:
        return False
    if sample.count(0) > len(sample) // 100:
        return True
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    return controls > max(2, len(sample) // 50)


def decode_bytes(data: bytes, *, source: str) -> str:
    """Decode a file's bytes to text; ``BadInput`` when binary or in no encoding we can tell."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding)
            except UnicodeDecodeError as exc:
                raise BadInput(
                    f"{source}: starts with a {encoding} byte-order mark but is not valid "
                    f"{encoding} at byte {exc.start + len(bom)}.",
                    hint="Re-save the file as UTF-8.",
                    path=source,
                ) from exc

    if looks_binary(data):
        text = _decode_bomless_utf16(data)
        if text is not None:
            return text
        raise BadInput(
            f"{source}: looks binary (NUL or control bytes), not a text document.",
            hint="Only Markdown, plain text, HTML and PDF files can be ingested; check the "
            "file's real type (e.g. with `file`) and rename or convert it.",
            path=source,
        )

    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        first_error = exc.start

    # Mostly valid multi-byte UTF-8 with a few bad bytes is broken UTF-8, not a legacy file.
    lenient = data.decode("utf-8", errors="replace")
    invalid = lenient.count("\ufffd")
    valid = len(lenient) - len(lenient.encode("ascii", "ignore")) - invalid
    if valid >= invalid:
        raise BadInput(
            f"{source}: invalid UTF-8 at byte {first_error} ({invalid} bad sequence(s)).",
            hint="Fix or re-save the file as UTF-8 (e.g. `iconv -f ENCODING -t UTF-8`).",
            path=source,
        )

    text = _decode_chinese(data) or _decode_detected(data)
    if text is None:
        raise BadInput(
            f"{source}: cannot tell its text encoding (not UTF-8, UTF-16 with BOM, GB18030/GBK "
            "or another detectable encoding).",
            hint="Convert it to UTF-8, e.g. `iconv -f ENCODING -t UTF-8 FILE`.",
            path=source,
        )
    return text


def _decode_bomless_utf16(data: bytes) -> str | None:
    """UTF-16 written without a BOM: NULs on one side of nearly every byte pair."""
    sample = data[: _SNIFF_BYTES & ~1]
    if len(sample) < 4 or len(data) % 2:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    pairs = len(sample) // 2
    for nuls, other, encoding in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
        if nuls >= 0.6 * pairs and other <= 0.02 * pairs:
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                return None
            return None if _JUNK.search(text) else text
    return None


def _decode_chinese(data: bytes) -> str | None:
    """GB18030 (a superset of GBK and GB2312) when it decodes and reads as Chinese."""
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        return None
    sample = text[:_PLAUSIBILITY_CHARS]
    wide = len(sample) - len(sample.encode("ascii", "ignore"))
    if not wide:
        return None
    return text if len(_CJK.findall(sample)) >= 0.8 * wide else None


def _decode_detected(data: bytes) -> str | None:
    """Ask charset-normalizer; among the least chaotic guesses prefer common encodings."""
    from charset_normalizer import from_bytes

    matches = [m for m in from_bytes(data) if not m.encoding.startswith(_NEVER_GUESS)]
    if not matches:
        return None
    # Short texts leave the detector torn between code pages (French read as Baltic cp1257);
    # a common encoding nearly as clean as the best guess is the likelier truth.
    best_chaos = min(m.chaos for m in matches)
    best = [m for m in matches if m.chaos <= best_chaos + _CHAOS_TOLERANCE]
    chosen = best[0]
    for name in _PREFERRED:
        hit = next((m for m in best if m.encoding == name), None)
        if hit is not None:
            chosen = hit
            break
    if chosen.chaos > 0.3:
        return None
    logger.debug("decoded as %s (chaos %.2f)", chosen.encoding, chosen.chaos)
    return str(chosen)


def size_limit_error(source: str, size: int, max_bytes: int, *, what: str = "is") -> BadInput:
    """The error for a file over the size limit, naming the limit and the setting."""
    return BadInput(
        f"{source} {what} {size / MIB:.1f} MiB, over the {max_bytes / MIB:g} MiB limit.",
        hint=f"Raise {SIZE_SETTING} in the config (LOCALMCP_KB__MAX_FILE_MB) or split the file.",
        path=source,
        size=size,
        limit=max_bytes,
    )


def read_file_bytes(path: Path, *, max_bytes: int) -> bytes:
    """Read a file's bytes, refusing it before reading when over ``max_bytes``.

    A ``.gz`` file is decompressed transparently, and refused when it would decompress to more
    than ``max_bytes`` (decompression stops there).
    """
    source = str(path)
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise NotFound(f"file {source!r} does not exist.", path=source) from exc
    except OSError as exc:
        raise BadInput(f"cannot read {source!r}: {exc.strerror}.", path=source) from exc
    if stat.S_ISDIR(info.st_mode):
        raise BadInput(f"{source!r} is a folder, not a file.", hint="Pass a file.", path=source)
    if not stat.S_ISREG(info.st_mode):  # reading a FIFO or a device could block for ever
        raise BadInput(
            f"{source!r} is not a regular file (a pipe, socket or device).",
            hint="Only ordinary files are read; copy its content into a file first.",
            path=source,
        )
    if info.st_size > max_bytes:
        raise size_limit_error(source, info.st_size, max_bytes)

    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise size_limit_error(source, len(data), max_bytes, what="decompresses to over")
            return data
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BadInput(
            f"{source}: not a valid gzip file ({exc}).",
            hint="Decompress it yourself or remove the .gz suffix.",
            path=source,
        ) from exc
    except OSError as exc:
        raise BadInput(f"cannot read {source!r}: {exc}.", path=source) from exc
    if len(data) > max_bytes:  # grew between stat and read
        raise size_limit_error(source, len(data), max_bytes)
    return data


def read_text_file(path: Path, *, max_bytes: int) -> str:
    """Read, decode and normalise a text file (``.gz`` transparently), within ``max_bytes``."""
    data = read_file_bytes(path, max_bytes=max_bytes)
    text = clean_text(decode_bytes(data, source=str(path)))
    if not text.strip():
        raise BadInput(
            f"{path}: empty file{' (only whitespace)' if data else ''}.",
            hint="Nothing to ingest; remove the file or give it content.",
            path=str(path),
        )
    return text

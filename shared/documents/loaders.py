"""Load Markdown, plain text, HTML and PDF files (optionally ``.gz``) into ``Document``s.

HTML is reduced to its main content (navigation, scripts, styles and tables of contents
removed with selectolax) and converted to Markdown with markdownify, so its headings drive the
same heading-aware chunker as Markdown. PDFs are read through pdfium's text layer, page by
page; pages without text are reported in ``Document.warnings`` and a PDF without any text is
refused, since it needs OCR first.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..textio import clean_text, content_hash, decode_bytes, read_file_bytes, read_text_file
from .model import DocFormat, Document
from .structure import first_heading

if TYPE_CHECKING:
    from selectolax.lexbor import LexborNode

logger = logging.getLogger(__name__)

FORMATS: dict[str, DocFormat] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
SUPPORTED_SUFFIXES = tuple(FORMATS) + tuple(f"{s}.gz" for s in FORMATS)

# Removed from HTML before conversion: code, chrome and navigation rather than content.
_HTML_NOISE = (
    "script, style, noscript, template, iframe, object, embed, svg, canvas, form, button, "
    "select, nav, aside, [role=navigation], [role=banner], [role=contentinfo], [role=search], "
    "[aria-hidden=true], body > header, body > footer, .navheader, .navfooter, div.toc, "
    ".breadcrumb, .breadcrumbs, .skip-link"
)
_MAIN_CANDIDATES = ("main", "[role=main]")
_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_BLANK_RUNS = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_TITLE_CHARS = 200
# Titles PDF producers write when the author gave none.
_PLACEHOLDER_TITLES = frozenset({"untitled", "untitled document", "document", "title"})

# pdfium is not thread-safe; loaders may run in several worker threads at once.
_PDFIUM_LOCK = threading.Lock()


def document_format(path: Path | str) -> DocFormat | None:
    """The format a file name maps to (``.gz`` looked through), or ``None`` if unsupported."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return FORMATS.get(Path(name).suffix)


def load_document(path: Path, *, max_bytes: int) -> Document:
    """Load one file by its suffix (``.md``, ``.markdown``, ``.txt``, ``.html``, ``.htm``,
    ``.pdf``, each optionally ``.gz``); ``BadInput`` for anything that yields no usable text.

    ``max_bytes`` bounds the file and, for ``.gz``, its decompressed size.
    """
    real = Path(os.path.realpath(path))
    source = str(real)
    fmt = document_format(real)
    if fmt is None:
        raise BadInput(
            f"{source}: unsupported file type {real.suffix or '(no suffix)'!r}.",
            hint=f"Supported: {', '.join(SUPPORTED_SUFFIXES)}. Convert the file or exclude it.",
            path=source,
        )

    warnings: list[str] = []
    pages: list[tuple[int, int]] = []
    if fmt in ("markdown", "text"):
        text = read_text_file(real, max_bytes=max_bytes)
        title = _title_from_text(text, markdown=fmt == "markdown")
    elif fmt == "html":
        html = _decode_html(read_file_bytes(real, max_bytes=max_bytes), source)
        title, text = html_to_markdown(html)
        text = _require_text(clean_text(text), source, "no text content in this HTML page")
        title = title or _title_from_text(text, markdown=True)
    else:
        data = read_file_bytes(real, max_bytes=max_bytes)
        title, text, pages, warnings = _read_pdf(data, source)

    try:
        modified_at: float | None = real.stat().st_mtime
    except OSError:
        modified_at = None
    doc = Document(
        source=source,
        title=title or _stem(real),
        format=fmt,
        text=text,
        modified_at=modified_at,
        content_hash=content_hash(text),
        warnings=warnings,
        pages=pages,
    )
    logger.debug("loaded %s (%s, %d chars)", source, fmt, len(text))
    return doc


def document_from_text(
    text: str, *, source: str, title: str | None = None, format: DocFormat = "markdown"
) -> Document:
    """Make a ``Document`` from raw text (``markdown``, ``text`` or ``html``) and a label."""
    if format == "pdf":
        raise BadInput(
            "raw text cannot have format 'pdf'.",
            hint="Use 'markdown', 'text' or 'html', or ingest the PDF file itself.",
        )
    if format not in FORMATS.values():
        raise BadInput(f"unknown format {format!r}.", hint="Use 'markdown', 'text' or 'html'.")
    html_title: str | None = None
    if format == "html":
        html_title, text = html_to_markdown(text)
    cleaned = _require_text(clean_text(text), source, "empty text")
    chosen = title or html_title or _title_from_text(cleaned, markdown=format != "text")
    return Document(
        source=source,
        title=chosen or source,
        format=format,
        text=cleaned,
        modified_at=None,
        content_hash=content_hash(cleaned),
    )


def html_to_markdown(html: str) -> tuple[str | None, str]:
    """The page title and its main content as Markdown (headings kept as ``#`` headings)."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = " ".join(title_node.text().split()) if title_node is not None else ""
    for node in tree.css(_HTML_NOISE):
        node.decompose()
    root = _main_node(tree)
    try:
        markdown = _converter().convert(root.html or "") if root is not None else ""
    except RecursionError as exc:  # the converter recurses once per nesting level
        raise BadInput(
            "the HTML is nested too deeply to convert to text.",
            hint="Simplify the page (or save it as plain text) and ingest that.",
        ) from exc
    markdown = markdown.replace("\xa0", " ")
    markdown = _BLANK_RUNS.sub("\n\n", _TRAILING_SPACE.sub("\n", markdown)).strip() + "\n"
    if not title:
        h1 = tree.css_first("h1")
        title = " ".join(h1.text().split()) if h1 is not None else ""
    return title or None, markdown


def _main_node(tree: Any) -> LexborNode | None:
    """``<main>`` (or role=main, or a lone ``<article>``) if the page has one, else ``<body>``."""
    for selector in _MAIN_CANDIDATES:
        node = tree.css_first(selector)
        if node is not None:
            return node
    articles = tree.css("article")
    if len(articles) == 1:
        return articles[0]
    return tree.body or tree.root


_CONVERTER: Any = None


def _converter() -> Any:
    """A markdownify converter: ATX headings, no escaping, relative links reduced to text."""
    global _CONVERTER
    if _CONVERTER is None:
        from markdownify import MarkdownConverter

        class _Converter(MarkdownConverter):
            def convert_a(self, el: Any, text: str, parent_tags: Any) -> str:
                href = str(el.get("href") or "")
                if not href.startswith(("http://", "https://", "mailto:", "ftp://")):
                    return text
                # The package's stub omits the convert_* methods it defines.
                convert = MarkdownConverter.convert_a  # pyright: ignore[reportAttributeAccessIssue]
                return str(convert(self, el, text, parent_tags))

            def convert_img(self, el: Any, text: str, parent_tags: Any) -> str:
                return str(el.get("alt") or "")

        _CONVERTER = _Converter(
            heading_style="ATX",
            bullets="-",
            escape_asterisks=False,
            escape_underscores=False,
            escape_misc=False,
        )
    return _CONVERTER


def _decode_html(data: bytes, source: str) -> str:
    """Decode HTML: BOM, valid UTF-8, then a ``<meta charset>`` the bytes agree with, then
    detection."""
    if not data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        match = _CHARSET.search(data[:4096])
        if match:
            declared = match.group(1).decode("ascii", "replace").lower()
            if declared in ("gb2312", "gbk", "x-gbk", "gb_2312-80"):
                declared = "gb18030"  # the superset, as browsers do
            try:
                if codecs.lookup(declared).name not in ("utf-8", "utf-16", "utf-32"):
                    return data.decode(declared)
            except (LookupError, UnicodeDecodeError):
                pass
    return decode_bytes(data, source=source)


def _read_pdf(data: bytes, source: str) -> tuple[str, str, list[tuple[int, int]], list[str]]:
    """Title, joined text, (page, offset) pairs and warnings from a PDF's text layer."""
    import pypdfium2 as pdfium

    if b"%PDF-" not in data[:1024]:
        raise BadInput(
            f"{source}: not a PDF file (no %PDF- header).",
            hint="Check the file's real type (e.g. with `file`) and rename it.",
            path=source,
        )
    page_texts: list[str] = []
    drawn: set[int] = set()  # pages without text that still draw something (images, paths)
    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            raise BadInput(
                f"{source}: cannot open the PDF ({exc}).",
                hint="It may be encrypted or damaged; decrypt or repair it first "
                "(e.g. `qpdf --decrypt IN.pdf OUT.pdf`).",
                path=source,
            ) from exc
        try:
            meta_title = str(pdf.get_metadata_dict().get("Title") or "")
            for index in range(len(pdf)):
                page = pdf[index]
                try:
                    textpage = page.get_textpage()
                    try:
                        page_texts.append(clean_text(textpage.get_text_bounded()).strip())
                    finally:
                        textpage.close()
                    if not page_texts[-1] and next(iter(page.get_objects(max_depth=1)), None):
                        drawn.add(index + 1)
                finally:
                    page.close()
        finally:
            pdf.close()

    if not page_texts:
        raise BadInput(f"{source}: the PDF has no pages.", path=source)
    empty = [i + 1 for i, t in enumerate(page_texts) if not t]
    if len(empty) == len(page_texts):
        raise BadInput(
            f"{source}: no extractable text in its {len(page_texts)} page(s) (scanned? the PDF "
            "has no text layer).",
            hint="Run OCR on it first (e.g. `ocrmypdf IN.pdf OUT.pdf`) and ingest the result.",
            path=source,
        )

    parts: list[str] = []
    pages: list[tuple[int, int]] = []
    offset = 0
    for number, page_text in enumerate(page_texts, start=1):
        if not page_text:
            continue
        if parts:
            parts.append("\n\n")
            offset += 2
        pages.append((number, offset))
        parts.append(page_text)
        offset += len(page_text)
    text = "".join(parts)

    # Blank pages (nothing drawn, e.g. versos left empty for printing) are not worth a warning.
    warnings: list[str] = []
    unreadable = sorted(drawn)
    if unreadable:
        one = len(unreadable) == 1
        noun, verb, whose = ("page", "has", "its") if one else ("pages", "have", "their")
        warnings.append(
            f"{noun} {_ranges(unreadable)} {verb} no text layer (scanned?); {whose} content is "
            "not searchable until the PDF is OCRed"
        )
    title = " ".join(meta_title.split())
    if title.lower() in _PLACEHOLDER_TITLES:
        title = ""
    title = title or _title_from_text(text, markdown=False)
    return title, text, pages, warnings


def _ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    out: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)


def _require_text(text: str, source: str, what: str) -> str:
    """``text`` if it has any non-whitespace, else ``BadInput``."""
    if not text.strip():
        raise BadInput(f"{source}: {what}.", hint="Nothing to ingest.", path=source)
    return text


def _title_from_text(text: str, *, markdown: bool) -> str:
    """The first heading (Markdown) or the first non-empty line, shortened."""
    if markdown:
        heading = first_heading(text)
        if heading:
            return heading[:_TITLE_CHARS]
    for line in text.splitlines():
        words = " ".join(line.split())
        if words:
            return words[:_TITLE_CHARS]
    return ""


def _stem(path: Path) -> str:
    """File name without ``.gz`` and its format suffix."""
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return Path(name).stem

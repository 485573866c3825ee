"""Tests for the document loaders on generated files: Markdown, text, HTML, PDF, gzip."""

from __future__ import annotations

import gzip
import io
import random
import threading
from pathlib import Path

import pytest

from localmcp.shared.documents import (
    chunk_document,
    document_format,
    document_from_text,
    load_document,
)
from localmcp.shared.errors import BadInput, NotFound
from localmcp.shared.textio import MIB, content_hash

LIMIT = 10 * MIB


# --- PDFs drawn with reportlab ---


def _pdf(pages: list[str | None], *, title: str | None = None) -> bytes:
    """A PDF with one page per entry: text lines, ``None`` for an image only, ``""`` blank."""
    from PIL import Image, ImageDraw
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    if title:
        pdf.setTitle(title)
    for content in pages:
        if content is None:  # a "scan": a picture of text, no text layer
            image = Image.new("RGB", (600, 300), "white")
            ImageDraw.Draw(image).text((20, 20), "This line is only pixels.", fill="black")
            pdf.drawImage(ImageReader(image), 72, 400, 450, 225)
        else:
            for i, line in enumerate(content.splitlines()):
                font = "STSong-Light" if any(ord(c) > 0x2E80 for c in line) else "Helvetica"
                pdf.setFont(font, 11)
                pdf.drawString(72, 760 - 14 * i, line)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def _write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def test_text_pdf_gives_pages_as_sections_and_the_metadata_title(tmp_path: Path) -> None:
    pages: list[str | None] = [
        "Installing packages\nUse apt install to add software.",
        "第二页：如何删除软件包？\n使用 apt remove 命令。",
    ]
    path = _write(tmp_path / "manual.pdf", _pdf(pages, title="Generated manual"))
    doc = load_document(path, max_bytes=LIMIT)
    assert doc.format == "pdf"
    assert doc.title == "Generated manual"
    assert doc.warnings == []
    assert [n for n, _ in doc.pages] == [1, 2]
    assert "apt install" in doc.text and "如何删除软件包" in doc.text
    chunks = chunk_document(doc, size=200, overlap=20)
    assert [c.heading_path for c in chunks] == [("page 1",), ("page 2",)]
    assert "apt remove" in chunks[1].text


def test_pdf_without_title_metadata_takes_its_first_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "untitled.pdf", _pdf(["Release notes for 13\nMore text."]))
    assert load_document(path, max_bytes=LIMIT).title == "Release notes for 13"


def test_scanned_only_pdf_is_refused_as_no_extractable_text(tmp_path: Path) -> None:
    path = _write(tmp_path / "scan.pdf", _pdf([None, None]))
    with pytest.raises(BadInput, match="no extractable text") as info:
        load_document(path, max_bytes=LIMIT)
    assert "scanned" in str(info.value)
    assert "OCR" in str(info.value)


def test_mixed_pdf_loads_its_text_and_names_the_pages_without_text(tmp_path: Path) -> None:
    pages: list[str | None] = ["Page one has text.", None, "Page three has text.", None]
    path = _write(tmp_path / "mixed.pdf", _pdf(pages))
    doc = load_document(path, max_bytes=LIMIT)
    assert [n for n, _ in doc.pages] == [1, 3]
    assert len(doc.warnings) == 1
    assert "pages 2, 4 have no text layer" in doc.warnings[0]
    assert {c.heading_path for c in chunk_document(doc, size=500, overlap=0)} == {
        ("page 1",),
        ("page 3",),
    }


def test_blank_pages_are_skipped_without_a_warning(tmp_path: Path) -> None:
    path = _write(tmp_path / "blank.pdf", _pdf(["Front matter.", "", "Chapter 1."]))
    doc = load_document(path, max_bytes=LIMIT)
    assert doc.warnings == []
    assert [n for n, _ in doc.pages] == [1, 3]


def test_gzipped_pdf_is_read_transparently(tmp_path: Path) -> None:
    path = _write(tmp_path / "manual.pdf.gz", gzip.compress(_pdf(["Compressed PDF text."])))
    doc = load_document(path, max_bytes=LIMIT)
    assert doc.format == "pdf"
    assert "Compressed PDF text." in doc.text


def test_file_named_pdf_that_is_not_one_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "fake.pdf", "just text\n")
    with pytest.raises(BadInput, match="not a PDF"):
        load_document(path, max_bytes=LIMIT)


def test_damaged_pdf_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "broken.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 4)
    with pytest.raises(BadInput, match="cannot open the PDF"):
        load_document(path, max_bytes=LIMIT)


def test_pdfs_load_safely_from_several_threads(tmp_path: Path) -> None:
    paths = [
        _write(tmp_path / f"t{i}.pdf", _pdf([f"Thread document {i}.", "Second page."]))
        for i in range(4)
    ]
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def load(i: int) -> None:
        try:
            for _ in range(5):
                results[i] = load_document(paths[i], max_bytes=LIMIT).text
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert all(f"Thread document {i}." in results[i] for i in range(4))


# --- Markdown and text ---


def test_markdown_file_takes_its_h1_as_title(tmp_path: Path) -> None:
    path = _write(tmp_path / "guide.md", "Intro line\n\n# The Guide\n\n## Part\n\nText.\n")
    doc = load_document(path, max_bytes=LIMIT)
    assert (doc.format, doc.title) == ("markdown", "The Guide")
    assert doc.source == str(path.resolve())
    assert doc.modified_at == pytest.approx(path.stat().st_mtime)
    assert doc.content_hash == content_hash(doc.text)


def test_text_file_takes_its_first_line_as_title(tmp_path: Path) -> None:
    path = _write(tmp_path / "notes.txt", "\n\n   Meeting   notes  \n\nbody\n")
    doc = load_document(path, max_bytes=LIMIT)
    assert (doc.format, doc.title) == ("text", "Meeting notes")


def test_gzipped_markdown_and_text_are_read_transparently(tmp_path: Path) -> None:
    md = _write(tmp_path / "a.md.gz", gzip.compress("# 标题\n\n正文。\n".encode()))
    txt = _write(tmp_path / "b.txt.gz", gzip.compress("plain\n".encode("utf-16")))
    assert load_document(md, max_bytes=LIMIT).title == "标题"
    assert load_document(txt, max_bytes=LIMIT).text == "plain\n"


def test_gb18030_markdown_loads(tmp_path: Path) -> None:
    text = "# 常见问题\n\n如何安装软件包？使用 apt-get install 命令。\n"
    doc = load_document(_write(tmp_path / "faq.md", text.encode("gb18030")), max_bytes=LIMIT)
    assert doc.text == text and doc.title == "常见问题"


def test_binary_file_named_md_is_refused(tmp_path: Path) -> None:
    rng = random.Random(3)
    path = _write(tmp_path / "photo.md", b"\xff\xd8\xff\xe0" + rng.randbytes(5000))
    with pytest.raises(BadInput, match="looks binary"):
        load_document(path, max_bytes=LIMIT)


def test_unsupported_suffix_is_refused_naming_the_supported_ones(tmp_path: Path) -> None:
    path = _write(tmp_path / "slides.pptx", b"PK\x03\x04")
    with pytest.raises(BadInput, match=r"unsupported file type '\.pptx'") as info:
        load_document(path, max_bytes=LIMIT)
    assert ".md" in str(info.value) and ".pdf" in str(info.value)


def test_empty_markdown_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="empty file"):
        load_document(_write(tmp_path / "empty.md", b""), max_bytes=LIMIT)


def test_oversized_file_is_refused_before_loading(tmp_path: Path) -> None:
    path = _write(tmp_path / "big.html", "<p>" + "x" * 3000 + "</p>")
    with pytest.raises(BadInput, match=r"kb\.max_file_mb"):
        load_document(path, max_bytes=1000)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_document(tmp_path / "gone.md", max_bytes=LIMIT)


def test_document_format_looks_through_gz() -> None:
    assert document_format("a/b.HTML") == "html"
    assert document_format("debian-faq.en.txt.gz") == "text"
    assert document_format("x.pdf.gz") == "pdf"
    assert document_format("archive.tar.gz") is None
    assert document_format("README") is None


# --- HTML ---

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Package FAQ</title>
<style>.x {{ color: red }}</style><script>var tracking = "do not index";</script></head>
<body><div class="navheader"><a href="prev.html">Prev</a> <a href="next.html">Next</a></div>
<nav><ul><li><a href="/">Home</a></li><li>Site menu</li></ul></nav>
<div class="chapter"><h1><a id="top"></a>Chapter 7. Packages</h1>
<div class="toc"><a href="#a">7.1. What is a package?</a></div>
<h2>7.1. What is a package?</h2><p>A package holds <b>files</b> and a
<a href="#meta">control file</a>; see <a href="https://www.debian.org/doc/">the manuals</a>.</p>
<pre class="screen"># apt install hello
# dpkg -L hello</pre>
<h2>7.2. {second}</h2><p>{body}</p></div>
<div class="navfooter"><a href="index.html">Home</a></div></body></html>"""


def test_html_keeps_main_content_and_headings_and_drops_chrome(tmp_path: Path) -> None:
    page = PAGE.format(second="How are packages removed?", body="With apt remove.")
    doc = load_document(_write(tmp_path / "faq.html", page), max_bytes=LIMIT)
    assert doc.format == "html"
    assert doc.title == "Package FAQ"
    for noise in ("tracking", "Site menu", "Prev", "color: red"):
        assert noise not in doc.text
    assert doc.text.count("7.1. What is a package?") == 1  # heading kept, table of contents gone
    assert "control file" in doc.text and "(#meta)" not in doc.text
    assert "[the manuals](https://www.debian.org/doc/)" in doc.text
    chunks = chunk_document(doc, size=1000, overlap=100)
    assert [c.heading_path for c in chunks] == [
        ("Chapter 7. Packages", "7.1. What is a package?"),
        ("Chapter 7. Packages", "7.2. How are packages removed?"),
    ]
    assert "# apt install hello" in chunks[0].text  # code kept, not taken for a heading


def test_html_declared_as_gbk_is_decoded_by_its_meta_charset(tmp_path: Path) -> None:
    page = PAGE.format(second="如何删除软件包？", body="使用 apt remove 命令。")
    page = page.replace('charset="utf-8"', 'charset="gb2312"')
    doc = load_document(_write(tmp_path / "zh.htm", page.encode("gbk")), max_bytes=LIMIT)
    assert "使用 apt remove 命令。" in doc.text
    assert chunk_document(doc, size=1000, overlap=0)[-1].heading_path[-1] == "7.2. 如何删除软件包？"


def test_utf8_html_with_a_wrong_latin1_declaration_is_read_as_utf8(tmp_path: Path) -> None:
    page = PAGE.format(second="Café", body="Grüße, 中文。").replace("utf-8", "iso-8859-1")
    doc = load_document(_write(tmp_path / "lying.html", page), max_bytes=LIMIT)
    assert "Grüße, 中文。" in doc.text


def test_html_without_content_is_refused(tmp_path: Path) -> None:
    page = "<html><head><title>t</title><script>x()</script></head><body><nav>m</nav></body>"
    with pytest.raises(BadInput, match="no text content"):
        load_document(_write(tmp_path / "empty.html", page), max_bytes=LIMIT)


def test_html_main_element_is_preferred_over_the_rest_of_the_body(tmp_path: Path) -> None:
    page = (
        "<html><body><div>Cookie banner text</div><main><h1>Real</h1><p>Body.</p></main>"
        "<div>Footer links</div></body></html>"
    )
    doc = load_document(_write(tmp_path / "m.html", page), max_bytes=LIMIT)
    assert "Body." in doc.text and "Cookie" not in doc.text and "Footer" not in doc.text
    assert doc.title == "Real"


# --- raw text ---


def test_document_from_text_normalises_and_titles() -> None:
    doc = document_from_text("# Notes\r\n\r\nBody\x00 text\r\n", source="note:1")
    assert doc.text == "# Notes\n\nBody text\n"
    assert (doc.title, doc.format, doc.modified_at) == ("Notes", "markdown", None)
    assert doc.content_hash == content_hash("# Notes\n\nBody text\n")


def test_document_from_text_converts_html_and_keeps_an_explicit_title() -> None:
    doc = document_from_text("<h1>Head</h1><p>Para</p>", source="u", title="Given", format="html")
    assert doc.title == "Given"
    assert doc.text.startswith("# Head")


@pytest.mark.parametrize("text", ["", "  \n\t"])
def test_document_from_empty_text_is_refused(text: str) -> None:
    with pytest.raises(BadInput, match="empty text"):
        document_from_text(text, source="s")


def test_document_from_text_refuses_pdf_format() -> None:
    with pytest.raises(BadInput, match="pdf"):
        document_from_text("x", source="s", format="pdf")

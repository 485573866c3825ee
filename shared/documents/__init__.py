"""Document loading and chunking: files to ``Document``s, ``Document``s to bounded ``Chunk``s."""

from .chunker import chunk_document
from .loaders import (
    FORMATS,
    SUPPORTED_SUFFIXES,
    document_format,
    document_from_text,
    html_to_markdown,
    load_document,
)
from .model import Chunk, DocFormat, Document

__all__ = [
    "FORMATS",
    "SUPPORTED_SUFFIXES",
    "Chunk",
    "DocFormat",
    "Document",
    "chunk_document",
    "document_format",
    "document_from_text",
    "html_to_markdown",
    "load_document",
]

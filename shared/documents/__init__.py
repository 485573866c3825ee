"""Document loading and chunking."""

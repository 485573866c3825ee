"""Knowledge-base server on Milvus."""

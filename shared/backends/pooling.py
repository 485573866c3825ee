"""Turn per-token embedding vectors into one vector per text.

llama.cpp servers whose model has no pooling (``--pooling none``, or llama-cpp-python's
server, which has no pooling option) return one vector per *token*. Search needs one per
text, so ``backend.embed_pooling = "mean"`` averages the token vectors and scales the result
to unit length (L2), which is what engines that pool by mean return themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def is_per_token(vector: object) -> bool:
    """True when an engine returned a list of token vectors instead of one vector."""
    return isinstance(vector, list) and bool(vector) and isinstance(vector[0], list)


def l2_normalise(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to length 1 (a zero vector is returned unchanged)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if norm == 0.0:
        return list(vector)
    return [x / norm for x in vector]


def mean_pool(token_vectors: Sequence[Sequence[float]]) -> list[float]:
    """Average of the token vectors, L2-normalised; ``ValueError`` on ragged or empty input."""
    if not token_vectors:
        raise ValueError("no token vectors to pool")
    width = len(token_vectors[0])
    if any(len(v) != width for v in token_vectors):
        raise ValueError("token vectors differ in length")
    count = len(token_vectors)
    sums = [math.fsum(column) for column in zip(*token_vectors, strict=True)]
    return l2_normalise([s / count for s in sums])

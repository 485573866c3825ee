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
    """``vector`` scaled to length 1 (a zero vector is returned unchanged).

    Components are first divided by the largest magnitude, so squaring very large (or very
    small) values cannot overflow to infinity (or underflow to zero).
    """
    scale = max((abs(x) for x in vector), default=0.0)
    if scale == 0.0:
        return list(vector)
    scaled = [x / scale for x in vector]
    norm = math.sqrt(math.fsum(x * x for x in scaled))
    return [x / norm for x in scaled]


def mean_pool(token_vectors: Sequence[Sequence[float]]) -> list[float]:
    """Average of the token vectors, L2-normalised; ``ValueError`` on ragged or empty input."""
    if not token_vectors:
        raise ValueError("no token vectors to pool")
    width = len(token_vectors[0])
    if any(len(v) != width for v in token_vectors):
        raise ValueError("token vectors differ in length")
    count = len(token_vectors)
    # Dividing before summing keeps the mean finite however large the components are.
    means = [math.fsum(x / count for x in column) for column in zip(*token_vectors, strict=True)]
    return l2_normalise(means)

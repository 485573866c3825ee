"""Embeddings for the knowledge base: batched calls to the shared backend, queries cached."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from localmcp.shared.backends import Backend
from localmcp.shared.errors import UpstreamError

logger = logging.getLogger(__name__)

QUERY_CACHE = 256


class Embedder:
    """One embedding model on one backend; ``dim`` is known after ``start``."""

    def __init__(
        self, backend: Callable[[], Awaitable[Backend]], model: str, *, batch: int = 32
    ) -> None:
        self._backend = backend
        self.model = model
        self.batch = batch
        self.dim: int | None = None
        self._queries: OrderedDict[str, list[float]] = OrderedDict()

    async def start(self) -> int:
        """Learn the vector dimension (one probe embedding); returns it."""
        if self.dim is None:
            vectors = await self._call(["dimension probe"])
            self.dim = len(vectors[0])
            logger.info("embedding model %s: dimension %d", self.model, self.dim)
        return self.dim

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order, in batches of ``batch``."""
        await self.start()
        out: list[list[float]] = []
        for first in range(0, len(texts), self.batch):
            out.extend(await self._call(texts[first : first + self.batch]))
        return out

    async def embed_query(self, text: str) -> list[float]:
        """The vector of a search query (the last few hundred are cached)."""
        cached = self._queries.get(text)
        if cached is not None:
            self._queries.move_to_end(text)
            return cached
        vector = (await self.embed([text]))[0]
        self._queries[text] = vector
        if len(self._queries) > QUERY_CACHE:
            self._queries.popitem(last=False)
        return vector

    async def _call(self, texts: list[str]) -> list[list[float]]:
        backend = await self._backend()
        vectors = await backend.embed(self.model, texts)
        if len(vectors) != len(texts):
            raise UpstreamError(
                f"embedding model {self.model!r} returned {len(vectors)} vectors for "
                f"{len(texts)} texts.",
                hint="Check the engine serves this model as an embedding model.",
            )
        if self.dim is not None and any(len(v) != self.dim for v in vectors):
            raise UpstreamError(
                f"embedding model {self.model!r} changed dimension (expected {self.dim}).",
                hint="The engine now serves another model under this name; restart localmcp.",
            )
        return vectors

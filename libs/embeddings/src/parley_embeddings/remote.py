"""Any server speaking OpenAI's ``/v1/embeddings`` (OpenAI, vLLM, Ollama, TEI...).

httpx is imported when an embedder is made: a service on the local model does not pay its
import at start (with click and rich installed it also imports its command line, a few
tenths of a second).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


class EmbeddingServerError(Exception):
    """The embeddings server failed or answered something unusable."""


class OpenAICompatibleEmbedder:
    """Batches texts to ``{base_url}/embeddings`` and returns vectors in input order."""

    def __init__(
        self,
        base_url: str,
        model: str,
        dimensions: int,
        *,
        api_key: str | None = None,
        batch_size: int = 128,
        timeout: float = 30.0,
    ) -> None:
        self.model = model
        self.dimensions = dimensions
        self.batch_size = batch_size
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client: httpx.AsyncClient = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout
        )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(await self._batch(list(texts[start : start + self.batch_size])))
        return vectors

    async def _batch(self, texts: list[str]) -> list[list[float]]:
        import httpx

        try:
            response = await self._client.post(
                "/embeddings", json={"model": self.model, "input": texts}
            )
        except httpx.HTTPError as error:
            raise EmbeddingServerError(f"embeddings server unreachable: {error}") from None
        if response.status_code != 200:
            raise EmbeddingServerError(f"embeddings server answered HTTP {response.status_code}")
        data = sorted(response.json()["data"], key=lambda item: item["index"])
        vectors = [list(map(float, item["embedding"])) for item in data]
        if len(vectors) != len(texts) or any(len(v) != self.dimensions for v in vectors):
            raise EmbeddingServerError(
                f"embeddings server returned {len(vectors)} vectors, expected {len(texts)} "
                f"of {self.dimensions} dimensions"
            )
        return vectors

    async def close(self) -> None:
        await self._client.aclose()

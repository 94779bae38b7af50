"""Sentence embeddings for retrieval (and the router's Embed).

``LocalEmbedder`` runs all-MiniLM-L6-v2 (int8 ONNX, shipped by a package) on the CPU with no
download; ``OpenAICompatibleEmbedder`` calls any ``/v1/embeddings`` server. Both satisfy
``Embedder``.
"""

from parley_embeddings.base import Embedder
from parley_embeddings.local import LocalEmbedder
from parley_embeddings.remote import OpenAICompatibleEmbedder

__all__ = ["Embedder", "LocalEmbedder", "OpenAICompatibleEmbedder"]

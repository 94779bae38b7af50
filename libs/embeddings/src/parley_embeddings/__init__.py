"""Sentence embeddings for retrieval (and the router's Embed).

``LocalEmbedder`` runs all-MiniLM-L6-v2 (float32 weights shipped by a package, onnxruntime)
on the CPU with no download; ``OpenAICompatibleEmbedder`` calls any ``/v1/embeddings`` server;
``CachingEmbedder`` puts a cache by content hash in front of either (the local one has it
built in). All satisfy ``Embedder``.
"""

from parley_embeddings.base import Embedder
from parley_embeddings.cache import CachingEmbedder
from parley_embeddings.local import LocalEmbedder
from parley_embeddings.remote import OpenAICompatibleEmbedder

__all__ = ["CachingEmbedder", "Embedder", "LocalEmbedder", "OpenAICompatibleEmbedder"]

"""The retrieval service's channel: search over a knowledge base's chunks."""

from __future__ import annotations

import grpc

from parley_runtime.grpc_client import channel

SERVICE = "parley.retrieval.v1.Retrieval"
IDEMPOTENT_METHODS = ("Search", "GetCollectionStats")


def open_channel(address: str, timeout: float) -> grpc.aio.Channel:
    """A channel to retrieval at ``address``; ``timeout`` is the deadline of unary calls."""
    return channel(address, SERVICE, idempotent_methods=IDEMPOTENT_METHODS, default_timeout=timeout)

"""The ingest service's channel: knowledge-base documents and their ingest jobs."""

from __future__ import annotations

import grpc

from parley_runtime.grpc_client import channel

SERVICE = "parley.ingest.v1.Ingest"
# Reads only: a write retried after a lost reply could be applied twice.
IDEMPOTENT_METHODS = ("GetDocument", "ListDocuments", "GetJob", "ListKnowledgeBases")


def open_channel(address: str, timeout: float) -> grpc.aio.Channel:
    """A channel to ingest at ``address``; ``timeout`` is the deadline of unary calls."""
    return channel(address, SERVICE, idempotent_methods=IDEMPOTENT_METHODS, default_timeout=timeout)

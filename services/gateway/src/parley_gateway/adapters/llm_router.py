"""The llm-router's channel: the model aliases callers may choose."""

from __future__ import annotations

import grpc

from parley_runtime.grpc_client import channel

SERVICE = "parley.llm_router.v1.LlmRouter"
IDEMPOTENT_METHODS = ("ListModels", "CountTokens", "GetUsage")


def open_channel(address: str, timeout: float) -> grpc.aio.Channel:
    """A channel to llm-router at ``address``; ``timeout`` is the deadline of unary calls."""
    return channel(address, SERVICE, idempotent_methods=IDEMPOTENT_METHODS, default_timeout=timeout)

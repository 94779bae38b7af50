"""gRPC channels to other Parley services.

:func:`channel` builds a ``grpc.aio`` channel the way ARCHITECTURE.md asks for Kubernetes:
``dns:///`` targets (a headless service resolves to every pod) with round-robin balancing,
keepalive, and retries of UNAVAILABLE only for methods the caller declares idempotent.

Every call made on it carries the principal (unless the call names one in its metadata),
request id and trace context of the request being served, and a deadline: the caller's own
timeout, capped by what is left of the incoming request's deadline, or the channel's default.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from opentelemetry import trace

from parley_runtime import telemetry
from parley_runtime.context import (
    REQUEST_ID_KEY,
    TENANT_KEY,
    principal_metadata,
    principal_var,
    remaining_seconds,
    request_id_var,
)

_tracer = trace.get_tracer("parley.grpc.client")


def normalise_target(target: str) -> str:
    """``host:port`` becomes ``dns:///host:port``; explicit schemes are kept."""
    if "://" in target or target.startswith(("dns:", "unix:", "ipv4:", "ipv6:")):
        return target
    return f"dns:///{target}"


def service_config(service: str, idempotent_methods: Sequence[str]) -> dict[str, Any]:
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if idempotent_methods:
        config["methodConfig"] = [
            {
                "name": [{"service": service, "method": m} for m in idempotent_methods],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return config


class _Propagating:
    """A method of a peer, called with the principal, request id, trace context and deadline
    of the request being served (see the module docstring).

    This wraps each method's multi-callable rather than using ``grpc.aio`` client
    interceptors: with an interceptor, every call starts in a task of its own and every
    streamed message passes through one more generator, a fixed cost on the first token's
    path of each hop.
    """

    __slots__ = ("_default_timeout", "_inner", "_method", "_name", "_service")

    def __init__(self, inner: Any, method: str, default_timeout: float) -> None:
        self._inner = inner
        self._name = method.lstrip("/")
        self._service, _, self._method = self._name.partition("/")
        self._default_timeout = default_timeout

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str | bytes]] | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        outgoing = list(metadata or ())
        principal = principal_var.get()
        # A call that names its principal (a job acting for its uploader) keeps it.
        if principal is not None and not any(key == TENANT_KEY for key, _ in outgoing):
            outgoing.extend(principal_metadata(principal))
        request_id = request_id_var.get()
        if request_id:
            outgoing.append((REQUEST_ID_KEY, request_id))
        span = _tracer.start_span(
            self._name,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": self._service,
                "rpc.method": self._method,
            },
        )
        traced = span.get_span_context().is_valid  # without tracing there is nothing to send
        if traced:
            carrier: dict[str, str] = {}
            with trace.use_span(span, end_on_exit=False):
                telemetry.inject(carrier)
            outgoing.extend(carrier.items())
        if timeout is None:
            timeout = self._default_timeout
        remaining = remaining_seconds()
        if remaining is not None:
            timeout = min(timeout, max(remaining, 0.001))
        try:
            call = self._inner(
                request,
                timeout=timeout,
                metadata=outgoing,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
        except BaseException:
            span.end()
            raise
        if traced:
            call.add_done_callback(lambda _: span.end())
        return call


class _UnaryUnary(_Propagating, grpc.aio.UnaryUnaryMultiCallable):
    __slots__ = ()


class _UnaryStream(_Propagating, grpc.aio.UnaryStreamMultiCallable):
    __slots__ = ()


class _StreamUnary(_Propagating, grpc.aio.StreamUnaryMultiCallable):
    __slots__ = ()


class _StreamStream(_Propagating, grpc.aio.StreamStreamMultiCallable):
    __slots__ = ()


class _PropagatingChannel(grpc.aio.Channel):
    """A ``grpc.aio`` channel whose methods propagate the request's context
    (:class:`_Propagating`); stubs are built on it as on any channel."""

    def __init__(self, inner: grpc.aio.Channel, default_timeout: float) -> None:
        self._inner = inner
        self._default_timeout = default_timeout

    async def __aenter__(self) -> _PropagatingChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._inner.close(None)

    async def close(self, grace: float | None = None) -> None:
        await self._inner.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._inner.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._inner.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._inner.channel_ready()

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _UnaryUnary:
        inner = self._inner.unary_unary(method, *args, **kwargs)
        return _UnaryUnary(inner, method, self._default_timeout)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> _UnaryStream:
        inner = self._inner.unary_stream(method, *args, **kwargs)
        return _UnaryStream(inner, method, self._default_timeout)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> _StreamUnary:
        inner = self._inner.stream_unary(method, *args, **kwargs)
        return _StreamUnary(inner, method, self._default_timeout)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> _StreamStream:
        inner = self._inner.stream_stream(method, *args, **kwargs)
        return _StreamStream(inner, method, self._default_timeout)


def channel(
    target: str,
    service: str,
    *,
    idempotent_methods: Iterable[str] = (),
    default_timeout: float = 30.0,
) -> grpc.aio.Channel:
    """A channel to ``service`` (full proto name) at ``target``, ready for stubs."""
    options = [
        ("grpc.service_config", json.dumps(service_config(service, list(idempotent_methods)))),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
        # A peer that comes back is tried again within a second, however long it was down
        # (grpc's default backoff grows to two minutes).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    return _PropagatingChannel(
        grpc.aio.insecure_channel(normalise_target(target), options=options), default_timeout
    )


def deadline_after(seconds: float) -> float:
    """An absolute monotonic deadline ``seconds`` from now (for ``deadline_var``)."""
    return time.monotonic() + seconds

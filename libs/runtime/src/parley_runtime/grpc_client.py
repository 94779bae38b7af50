"""gRPC channels to other Parley services.

:func:`channel` builds a ``grpc.aio`` channel the way ARCHITECTURE.md asks for Kubernetes:
``dns:///`` targets (a headless service resolves to every pod) with round-robin balancing,
keepalive, and retries of UNAVAILABLE only for methods the caller declares idempotent.

The propagating interceptors add to every call the principal (unless the call names one in
its metadata), request id and trace context of the request being served, and a deadline: the
caller's own timeout, capped by what is left of the incoming request's deadline, or the
channel's default.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from opentelemetry import trace

from parley_runtime import telemetry
from parley_runtime.context import (
    REQUEST_ID_KEY,
    TENANT_KEY,
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


class _Details(grpc.aio.ClientCallDetails):
    pass


class _Propagation:
    """Principal, request id, trace context and deadline on every outgoing call.

    grpc.aio files each interceptor under the first call kind it implements, so each kind
    gets its own subclass below.
    """

    def __init__(self, default_timeout: float) -> None:
        self.default_timeout = default_timeout

    def _details(self, details: grpc.aio.ClientCallDetails, span: trace.Span) -> _Details:
        metadata = list(details.metadata or ())
        principal = principal_var.get()
        # A call that names its principal (a job acting for its uploader) keeps it.
        if principal is not None and not any(key == TENANT_KEY for key, _ in metadata):
            metadata.extend(principal.to_metadata())
        request_id = request_id_var.get()
        if request_id:
            metadata.append((REQUEST_ID_KEY, request_id))
        carrier: dict[str, str] = {}
        with trace.use_span(span, end_on_exit=False):
            telemetry.inject(carrier)
        metadata.extend(carrier.items())

        timeout = details.timeout if details.timeout is not None else self.default_timeout
        remaining = remaining_seconds()
        if remaining is not None:
            timeout = min(timeout, max(remaining, 0.001))
        return _Details(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )

    def _span(self, details: grpc.aio.ClientCallDetails) -> trace.Span:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        service, _, name = method.lstrip("/").partition("/")
        return _tracer.start_span(
            method.lstrip("/"),
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )

    async def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        span = self._span(details)
        try:
            call = await continuation(self._details(details, span), request)
        except BaseException:
            span.end()
            raise
        call.add_done_callback(lambda _: span.end())
        return call


class _UnaryUnary(_Propagation, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await self._call(continuation, client_call_details, request)


class _UnaryStream(_Propagation, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await self._call(continuation, client_call_details, request)


class _StreamUnary(_Propagation, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self._call(continuation, client_call_details, request_iterator)


def propagating_interceptors(default_timeout: float) -> list[Any]:
    """One propagating interceptor per call kind (see :class:`_Propagation`)."""
    return [
        _UnaryUnary(default_timeout),
        _UnaryStream(default_timeout),
        _StreamUnary(default_timeout),
    ]


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
    return grpc.aio.insecure_channel(
        normalise_target(target),
        options=options,
        interceptors=propagating_interceptors(default_timeout),
    )


def deadline_after(seconds: float) -> float:
    """An absolute monotonic deadline ``seconds`` from now (for ``deadline_var``)."""
    return time.monotonic() + seconds

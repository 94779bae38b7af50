"""The shared gRPC runtime over real sockets: what crosses a hop, and how errors map."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parley_runtime.context import (
    current_principal,
    principal_var,
    remaining_seconds,
    request_id_var,
)
from parley_runtime.errors import NotFound, from_rpc_error
from parley_runtime.grpc_client import channel
from parley_runtime.grpc_server import Registration, start_server, watch_readiness
from parley_runtime.settings import ServiceSettings
from parley_testkit import acting_as, grpc_server

SERVICE = "parley.test.Echo"


def _seen() -> bytes:
    """What a handler sees of the request context, as bytes."""
    principal = current_principal()
    remaining = remaining_seconds()
    return (
        f"{principal.tenant_id}|{principal.user_id}|{request_id_var.get()}|"
        f"{remaining is not None and 0 < remaining <= 5.5}"
    ).encode()


async def _unary(request: bytes, context: Any) -> bytes:
    if request == b"missing":
        raise NotFound("no such thing", code="thing_not_found")
    if request == b"bug":
        raise RuntimeError("secret internals")
    return _seen()


async def _server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield _seen()
    yield b"second"


async def _client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    parts = [r async for r in requests]
    return _seen() + b"|" + b"".join(parts)


def _handlers() -> dict[str, grpc.RpcMethodHandler]:
    return {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
    }


def _add_generic(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, _handlers())])


def _add_registered(server: grpc.aio.Server) -> None:
    # What the generated add_*Servicer_to_server functions do, beside the generic handler.
    server.add_registered_method_handlers(SERVICE, _handlers())  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    token = request_id_var.set("req-42")
    with acting_as("acme", "ann"):
        yield
    request_id_var.reset(token)


@pytest.fixture(params=[_add_generic, _add_registered], ids=["generic", "registered"])
async def chan(request: pytest.FixtureRequest) -> AsyncIterator[grpc.aio.Channel]:
    async with (
        grpc_server([Registration(SERVICE, request.param)]) as address,
        channel(address, SERVICE, default_timeout=5.0) as chan,
    ):
        yield chan


EXPECTED = b"acme|ann|req-42|True"


async def test_unary_call_carries_principal_request_id_and_deadline(chan: Any) -> None:
    assert await chan.unary_unary(f"/{SERVICE}/Unary")(b"hi") == EXPECTED


async def test_server_streaming_call_carries_them_too(chan: Any) -> None:
    call = chan.unary_stream(f"/{SERVICE}/ServerStream")(b"hi")
    assert [m async for m in call] == [EXPECTED, b"second"]


async def test_client_streaming_call_carries_them_too(chan: Any) -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    reply = await chan.stream_unary(f"/{SERVICE}/ClientStream")(parts())
    assert reply == EXPECTED + b"|ab"


async def test_domain_error_keeps_its_status_and_stable_code(chan: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chan.unary_unary(f"/{SERVICE}/Unary")(b"missing")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    error = from_rpc_error(raised.value)
    assert isinstance(error, NotFound)
    assert error.code == "thing_not_found"
    assert error.message == "no such thing"


async def test_unexpected_error_is_internal_without_its_details(chan: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chan.unary_unary(f"/{SERVICE}/Unary")(b"bug")
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (raised.value.details() or "")


async def test_missing_principal_is_unauthenticated(chan: Any) -> None:
    token = principal_var.set(None)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await chan.unary_unary(f"/{SERVICE}/Unary")(b"hi")
    finally:
        principal_var.reset(token)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_each_call_sees_its_own_principal_and_nothing_of_an_earlier_one(chan: Any) -> None:
    calls = [chan.unary_stream(f"/{SERVICE}/ServerStream")(b"hi") for _ in range(2)]
    with acting_as("globex", "gil"):
        calls.append(chan.unary_stream(f"/{SERVICE}/ServerStream")(b"hi"))
    seen = [[m async for m in call] for call in calls]
    assert seen == [[EXPECTED, b"second"]] * 2 + [[b"globex|gil|req-42|True", b"second"]]

    unary = chan.unary_unary(f"/{SERVICE}/Unary")
    with acting_as("initech", "ann"):
        assert await unary(b"hi") == b"initech|ann|req-42|True"
    token = principal_var.set(None)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await unary(b"hi")
    finally:
        principal_var.reset(token)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_call_that_names_its_principal_keeps_it(chan: Any) -> None:
    # A job acting for its uploader, while the process's own context has another principal.
    with acting_as("acme", "ann") as served:
        metadata = [
            ("parley-tenant-id", "globex"),
            ("parley-user-id", "gil"),
            ("parley-scopes", ""),
        ]
        reply = await chan.unary_unary(f"/{SERVICE}/Unary")(b"hi", metadata=metadata)
    assert served.tenant_id == "acme"
    assert reply == b"globex|gil|req-42|True"


async def _slow_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for _ in range(int(request)):
        await asyncio.sleep(0.1)
        yield b"."


@pytest.mark.parametrize(("max_stream", "cut"), [(10.0, False), (0.3, True)])
async def test_connection_ageing_lets_streams_run_as_long_as_the_longest_call(
    max_stream: float, cut: bool
) -> None:
    # Connections age after 0.5 s; a 2 s stream on one runs on after the GOAWAY for as long
    # as GRPC_MAX_STREAM_SECONDS allows (and is cut where that is shorter than the stream).
    settings = ServiceSettings(
        grpc_host="127.0.0.1",
        grpc_port=0,
        grpc_max_connection_age_seconds=0.5,
        grpc_max_stream_seconds=max_stream,
    )
    handlers = {"Slow": grpc.unary_stream_rpc_method_handler(_slow_stream)}
    registration = Registration(
        SERVICE,
        lambda s: s.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, handlers)]
        ),
    )
    server, _, port = await start_server(settings, [registration])
    try:
        async with channel(f"127.0.0.1:{port}", SERVICE, default_timeout=10.0) as chan:
            slow = chan.unary_stream(f"/{SERVICE}/Slow")
            calls = [slow(b"20") for _ in range(3)]
            outcomes = await asyncio.gather(
                *(_count(call) for call in calls), return_exceptions=True
            )
            # New calls after the ageing are served too, on a new connection.
            assert [m async for m in slow(b"2")] == [b".", b"."]
    finally:
        await server.stop(0)
    if cut:
        assert all(isinstance(o, grpc.aio.AioRpcError) for o in outcomes), outcomes
    else:
        assert outcomes == [20, 20, 20]


async def _count(call: Any) -> int:
    return len([m async for m in call])


async def test_readiness_follows_the_stores_while_liveness_stays_serving() -> None:
    settings = ServiceSettings(grpc_host="127.0.0.1", grpc_port=0)
    server, health_servicer, port = await start_server(
        settings, [Registration(SERVICE, _add_generic)]
    )
    answers = True

    async def database_answers() -> bool:
        if not answers:
            raise ConnectionError("the database does not answer")
        return True

    watcher = asyncio.create_task(
        watch_readiness(health_servicer, [SERVICE], database_answers, interval=0.05)
    )

    async def statuses() -> tuple[int, int]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            health = health_pb2_grpc.HealthStub(chan)
            live = await health.Check(health_pb2.HealthCheckRequest(service=""))
            ready = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
            return live.status, ready.status

    async def settled(expected: tuple[int, int]) -> tuple[int, int]:
        for _ in range(100):
            seen = await statuses()
            if seen == expected:
                break
            await asyncio.sleep(0.02)
        return seen

    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    try:
        assert await settled((serving, serving)) == (serving, serving)
        answers = False
        assert await settled((serving, not_serving)) == (serving, not_serving)
        answers = True
        assert await settled((serving, serving)) == (serving, serving)
    finally:
        watcher.cancel()
        await server.stop(0)

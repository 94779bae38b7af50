"""Liveness, readiness and the models callers may choose."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parley.llm_router.v1 import llm_router_pb2 as llm
from parley_gateway.adapters import Peers
from parley_gateway.auth import PUBLIC, require
from parley_gateway.body_limit import CappedRoute
from parley_gateway.errors import responses
from parley_gateway.limits.http import RATE_LIMITED
from parley_runtime.context import Principal

router = APIRouter(tags=["system"], route_class=CappedRoute)


@router.get("/healthz", dependencies=[PUBLIC])
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


async def _serving(chan: grpc.aio.Channel) -> bool:
    try:
        reply = await health_pb2_grpc.HealthStub(chan).Check(
            health_pb2.HealthCheckRequest(), timeout=1.0
        )
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@router.get(
    "/readyz",
    dependencies=[PUBLIC],
    responses={503: {"description": "A peer is down: the same body, naming it, not_ready."}},
)
async def readyz(request: Request) -> JSONResponse:
    """Ready when every peer the API needs reports SERVING."""
    peers: Peers = request.app.state.peers
    states = await asyncio.gather(*(_serving(c) for c in peers.channels.values()))
    checks = dict(zip(peers.channels, states, strict=True))
    ready = all(states)
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/v1/models", responses=responses(401, 403, 429, 500, 503), dependencies=[RATE_LIMITED])
async def list_models(
    request: Request, caller: Annotated[Principal, require("read")]
) -> dict[str, Any]:
    """The model aliases callers may choose, and the default one."""
    peers: Peers = request.app.state.peers
    listed = await peers.llm_router.ListModels(llm.ListModelsRequest())
    return {
        "default_model": listed.default_model,
        "models": [
            {
                "id": m.alias,
                "candidates": list(m.candidates),
                "context_window": m.context_window,
                "max_output_tokens": m.max_output_tokens,
                "local": m.local,
            }
            for m in listed.models
        ],
    }

"""llm-router's entry point: settings, routes, shared state, ledger; then gRPC.

parley-llm-router                               serve
parley-llm-router migrate upgrade|downgrade [revision]
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc
from parley_llm_router.adapters.sql_ledger import SqlLedger
from parley_llm_router.api import LlmRouterServicer
from parley_llm_router.breaker import BreakerPolicy, Breakers, LocalBreakers
from parley_llm_router.cache import LocalCache, ResponseCache
from parley_llm_router.config import RoutesConfig, from_environment, load
from parley_llm_router.dispatch import Dispatcher
from parley_llm_router.reload import EngineHolder
from parley_llm_router.settings import Settings
from parley_runtime import db, telemetry
from parley_runtime.cli import Migrations, service_main
from parley_runtime.grpc_server import Registration, Wiring

SERVICE = "parley.llm_router.v1.LlmRouter"
MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_llm_router"


def routes_config(settings: Settings) -> RoutesConfig:
    """The routes file when given, else routes from the provider settings."""
    if settings.routes_file is not None:
        return load(settings.routes_file)
    return from_environment(
        {
            "OPENAI_API_KEY": settings.openai_api_key,
            "OPENAI_BASE_URL": settings.openai_base_url,
            "ANTHROPIC_API_KEY": settings.anthropic_api_key,
            "ANTHROPIC_BASE_URL": settings.anthropic_base_url,
        },
        default_model=settings.default_model,
        openai_model=settings.openai_model,
        anthropic_model=settings.anthropic_model,
    )


def _shared_state(settings: Settings) -> tuple[Breakers, ResponseCache]:
    policy = BreakerPolicy(
        consecutive_failures=settings.breaker_consecutive_failures,
        window_seconds=settings.breaker_window_seconds,
        min_requests=settings.breaker_min_requests,
        error_rate=settings.breaker_error_rate,
        cooldown_seconds=settings.breaker_cooldown_seconds,
        probe_timeout_seconds=max(settings.breaker_cooldown_seconds, 30.0),
    )
    if settings.redis_url:
        from redis.asyncio import Redis

        from parley_llm_router.adapters.redis_state import RedisBreakers, RedisCache

        # Short timeouts: a slow or lost Redis must not hold requests up (both fail open).
        redis = Redis.from_url(settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        return RedisBreakers(redis, policy), RedisCache(redis, settings.cache_ttl_seconds)
    return LocalBreakers(policy), LocalCache(settings.cache_ttl_seconds)


def instrument() -> None:
    """The spans of the providers' HTTP calls (every provider runs on aiohttp, the SDKs'
    clients included) and of Redis, while tracing (``parley_runtime.telemetry``)."""
    if telemetry.instrumented("aiohttp-client"):
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

        AioHttpClientInstrumentor().instrument()
    if telemetry.instrumented("redis"):
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument()


async def build(settings: Settings, env: dict[str, str] | None = None) -> Wiring:
    """Routes, providers, breakers, cache and ledger wired into the servicer."""
    instrument()
    if settings.db_auto_migrate:
        await db.upgrade(MIGRATIONS, settings.database_url, VERSION_TABLE)
    environment = {
        **(env if env is not None else dict(os.environ)),
        **({"OPENAI_API_KEY": settings.openai_api_key} if settings.openai_api_key else {}),
        **({"ANTHROPIC_API_KEY": settings.anthropic_api_key} if settings.anthropic_api_key else {}),
    }
    holder = EngineHolder(
        routes_config(settings),
        environment,
        local_delay=settings.local_token_delay_ms / 1000,
        # Streams are read no more often than StreamChat's messages leave.
        pace=settings.stream_coalesce_ms / 1000,
        path=settings.routes_file,
    )
    breakers, cache = _shared_state(settings)
    ledger = SqlLedger(settings.database_url)
    ledger.start()
    dispatcher = Dispatcher(breakers=breakers, cache=cache, ledger=ledger)
    servicer = LlmRouterServicer(
        holder, dispatcher, ledger, coalesce_seconds=settings.stream_coalesce_ms / 1000
    )
    watcher = (
        asyncio.create_task(holder.watch(settings.routes_reload_seconds))
        if settings.routes_file is not None
        else None
    )

    async def close() -> None:
        if watcher is not None:
            watcher.cancel()
        await ledger.close()
        await holder.close()

    return Wiring(
        registrations=[
            Registration(SERVICE, lambda s: pb_grpc.add_LlmRouterServicer_to_server(servicer, s))
        ],
        close=close,
    )


def main() -> None:
    service_main("llm-router", Settings, build, Migrations(MIGRATIONS, VERSION_TABLE))


if __name__ == "__main__":
    main()

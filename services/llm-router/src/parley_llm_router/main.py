"""llm-router's entry point: reads settings, builds providers and routes, serves gRPC."""

from __future__ import annotations

from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc
from parley_llm_router.api import LlmRouterServicer
from parley_llm_router.providers.base import Provider, Timeouts
from parley_llm_router.providers.local import MODEL as LOCAL_MODEL
from parley_llm_router.providers.local import LocalProvider
from parley_llm_router.providers.openai import OpenAIProvider
from parley_llm_router.routing import Candidate, Route, RouteTable
from parley_llm_router.settings import Settings
from parley_runtime.grpc_server import Registration, Wiring, run, serve
from parley_runtime.logs import setup_logging
from parley_runtime.settings import load_settings
from parley_runtime.telemetry import setup_tracing

SERVICE = "parley.llm_router.v1.LlmRouter"


def routes_from(settings: Settings, providers: dict[str, Provider]) -> RouteTable:
    """``local`` always; ``default`` is OpenAI(-compatible) when configured, else local."""
    local = Route("local", (Candidate("local", LOCAL_MODEL, 1_000_000, 4096),))
    routes = {"local": local}
    if "openai" in providers:
        routes["openai"] = Route("openai", (Candidate("openai", settings.openai_model),))
        routes[settings.default_model] = Route(settings.default_model, routes["openai"].candidates)
    else:
        routes[settings.default_model] = Route(settings.default_model, local.candidates)
    return RouteTable(routes, settings.default_model)


async def build(settings: Settings) -> Wiring:
    """Providers, routes and the servicer, ready to serve."""
    timeouts = Timeouts(
        connect=settings.connect_timeout_seconds,
        first_token=settings.first_token_timeout_seconds,
        total=settings.total_timeout_seconds,
    )
    providers: dict[str, Provider] = {
        "local": LocalProvider(settings.local_token_delay_ms / 1000),
    }
    openai_provider: OpenAIProvider | None = None
    if settings.openai_api_key or settings.openai_base_url:
        openai_provider = OpenAIProvider(
            name="openai",
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            timeouts=timeouts,
        )
        providers["openai"] = openai_provider
    servicer = LlmRouterServicer(routes_from(settings, providers), providers, timeouts)

    async def close() -> None:
        if openai_provider is not None:
            await openai_provider.close()

    return Wiring(
        registrations=[
            Registration(SERVICE, lambda s: pb_grpc.add_LlmRouterServicer_to_server(servicer, s))
        ],
        close=close,
    )


async def _serve(settings: Settings) -> None:
    wiring = await build(settings)
    await serve("llm-router", settings, wiring.registrations, on_stop=wiring.close)


def main() -> None:
    settings = load_settings(Settings, "llm-router")
    setup_logging("llm-router", settings.log_level)
    setup_tracing(
        "llm-router", settings.otel_exporter_otlp_endpoint, settings.otel_traces_sampler_ratio
    )
    run(lambda: _serve(settings))


if __name__ == "__main__":
    main()

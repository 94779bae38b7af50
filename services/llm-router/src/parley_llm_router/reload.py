"""Turning a routes configuration into an :class:`~parley_llm_router.engine.Engine`, and
keeping it current.

:class:`EngineHolder` owns the engine requests use. With a routes file, :meth:`watch` checks
the file every few seconds; a changed file is validated and built in full before it
replaces the engine, so requests never see half a configuration, and a broken file is
rejected with one log line while the previous routes keep serving. Provider clients whose
configuration did not change are reused across reloads (their connections stay warm).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

from parley_llm_router.config import (
    ConfigError,
    ProviderConfig,
    ProviderType,
    RoutesConfig,
    load,
)
from parley_llm_router.embeddings import embedding_models
from parley_llm_router.engine import Engine
from parley_llm_router.providers.base import Provider
from parley_llm_router.providers.local import LocalProvider
from parley_llm_router.routing import RouteTable
from parley_llm_router.tokens import EstimatingCounter, TiktokenCounter, TokenCounter

log = logging.getLogger("parley.llm_router.routes")


def _provider(
    name: str, config: ProviderConfig, env: Mapping[str, str], local_delay: float, pace: float
) -> Provider:
    # Provider SDKs are imported when configured: each costs start time and memory.
    key = env.get(config.api_key_env) if config.api_key_env else None
    if config.type == ProviderType.LOCAL:
        return LocalProvider(local_delay)
    if config.type == ProviderType.ANTHROPIC:
        from parley_llm_router.providers.anthropic import AnthropicProvider

        return AnthropicProvider(name=name, api_key=key, base_url=config.base_url)
    if config.type == ProviderType.OPENAI_COMPATIBLE and config.base_url:
        from parley_llm_router.providers.compatible import CompatibleProvider

        return CompatibleProvider(name=name, api_key=key, base_url=config.base_url, pace=pace)
    from parley_llm_router.providers.openai import OpenAIProvider

    return OpenAIProvider(
        name=name, api_key=key, base_url=config.base_url, api_version=config.api_version
    )


def _counter(config: ProviderConfig) -> TokenCounter:
    if config.type in (ProviderType.OPENAI, ProviderType.AZURE_OPENAI):
        return TiktokenCounter()
    return EstimatingCounter()


class EngineHolder:
    """The current engine, rebuilt when the routes change (see the module docstring)."""

    def __init__(
        self,
        config: RoutesConfig,
        env: Mapping[str, str],
        *,
        local_delay: float = 0.0,
        pace: float = 0.0,
        path: Path | None = None,
    ) -> None:
        self.env = env
        self.local_delay = local_delay
        self.pace = pace
        self.path = path
        self._clients: dict[tuple[str, str], Provider] = {}
        self._retired: list[Provider] = []
        self._fingerprint = self._read_fingerprint()
        self.engine = self._build(config)

    def _read_fingerprint(self) -> str | None:
        if self.path is None:
            return None
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def _build(self, config: RoutesConfig) -> Engine:
        providers: dict[str, Provider] = {}
        clients: dict[tuple[str, str], Provider] = {}
        for name, provider_config in config.providers.items():
            identity = (name, provider_config.model_dump_json())
            provider = self._clients.get(identity) or _provider(
                name, provider_config, self.env, self.local_delay, self.pace
            )
            providers[name] = clients[identity] = provider
        # Clients no longer configured may still serve requests in flight: they are closed
        # at shutdown, and their idle connections expire on their own before then.
        self._retired.extend(p for k, p in self._clients.items() if k not in clients)
        self._clients = clients
        models, default = embedding_models(config)
        return Engine(
            routes=RouteTable.from_config(config),
            providers=providers,
            counters={name: _counter(c) for name, c in config.providers.items()},
            embedding_models=models,
            default_embedding_model=default,
        )

    def reload(self) -> bool:
        """Re-read the routes file; True when new routes took effect."""
        if self.path is None:
            return False
        fingerprint = self._read_fingerprint()
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        try:
            config = load(self.path)
        except ConfigError as error:
            log.error("routes file rejected; the previous routes keep serving: %s", error)
            return False
        self.engine = self._build(config)
        log.info("routes reloaded", extra={"aliases": sorted(self.engine.routes.routes)})
        return True

    async def watch(self, interval: float) -> None:
        """Reload whenever the file changes, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.reload()

    async def close(self) -> None:
        """Close every provider client, current and retired."""
        for provider in [*self._clients.values(), *self._retired]:
            await _close(provider)


async def _close(provider: Provider) -> None:
    close = getattr(provider, "close", None)
    if close is not None:
        await close()

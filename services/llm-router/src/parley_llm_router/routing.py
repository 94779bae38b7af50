"""Model aliases, their candidates, and the order in which a request tries them.

A route maps an alias callers use ("default", "local") onto candidates, each a provider and
a model with its limits and prices. :func:`order` decides, per request, which candidate goes
first: as listed (priority), at random in proportion to weights (weighted), or fastest first
by the moving average of time to first token (latency). Pure: no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from parley_llm_router.config import CandidateConfig, ProviderType, RoutesConfig, Strategy
from parley_llm_router.providers.base import Timeouts
from parley_runtime.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Candidate:
    """One provider and model that can answer for an alias."""

    provider: str
    model: str
    weight: float = 1.0
    max_concurrency: int = 1024
    queue_timeout: float = 1.0
    timeouts: Timeouts = field(default_factory=lambda: Timeouts(5.0, 30.0, 300.0, 30.0))
    price_input: float = 0.0
    price_output: float = 0.0
    context_window: int = 128_000
    max_output_tokens: int = 16_384
    max_attempts: int = 2
    # Whether the provider is the offline local one (whatever the routes name it).
    local: bool = False
    label: str = field(init=False, repr=False)  # "provider/model", read several times a call

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", f"{self.provider}/{self.model}")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """US dollars for this many tokens at this candidate's prices."""
        return (input_tokens * self.price_input + output_tokens * self.price_output) / 1e6

    @classmethod
    def from_config(cls, config: CandidateConfig, local: bool = False) -> Candidate:
        t = config.timeouts
        return cls(
            provider=config.provider,
            local=local,
            model=config.model,
            weight=config.weight,
            max_concurrency=config.max_concurrency,
            queue_timeout=config.queue_timeout,
            timeouts=Timeouts(t.connect, t.first_token, t.total, t.between_tokens),
            price_input=config.price.input,
            price_output=config.price.output,
            context_window=config.context_window,
            max_output_tokens=config.max_output_tokens,
            max_attempts=config.max_attempts,
        )


@dataclass(frozen=True, slots=True)
class Route:
    """An alias and its candidates, in configured order."""

    alias: str
    candidates: tuple[Candidate, ...]
    strategy: Strategy = Strategy.PRIORITY

    @property
    def max_output_tokens(self) -> int:
        return max(c.max_output_tokens for c in self.candidates)

    @property
    def context_window(self) -> int:
        return min(c.context_window for c in self.candidates)


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Every alias of one version of the routes, and the default."""

    routes: dict[str, Route]
    default_alias: str

    def resolve(self, alias: str) -> Route:
        """The route of ``alias`` (empty means the default); INVALID_ARGUMENT if unknown."""
        route = self.routes.get(alias or self.default_alias)
        if route is None:
            valid = ", ".join(sorted(self.routes))
            raise InvalidArgument(
                f"unknown model {alias!r}; valid models: {valid}", code="unknown_model"
            )
        return route

    @classmethod
    def from_config(cls, config: RoutesConfig) -> RouteTable:
        return cls(
            routes={
                alias: Route(
                    alias,
                    tuple(
                        Candidate.from_config(
                            c, config.providers[c.provider].type is ProviderType.LOCAL
                        )
                        for c in model.candidates
                    ),
                    model.strategy,
                )
                for alias, model in config.models.items()
            },
            default_alias=config.default_model,
        )


def order(
    route: Route,
    latency: Mapping[str, float],
    rng: random.Random | None = None,
) -> list[Candidate]:
    """The candidates of ``route`` in the order this request should try them.

    ``latency`` maps a candidate's label to its moving-average time to first token; a
    candidate not yet measured goes first under the latency strategy, so it gets measured.
    """
    candidates = list(route.candidates)
    if route.strategy == Strategy.PRIORITY or len(candidates) == 1:
        return candidates
    if route.strategy == Strategy.LATENCY:
        return sorted(candidates, key=lambda c: latency.get(c.label, 0.0))
    # Weighted: draw without replacement in proportion to weight, so the fallbacks
    # after the first pick are weighted too.
    rng = rng or random.Random()
    ordered: list[Candidate] = []
    pool = candidates
    while pool:
        pick = rng.choices(pool, weights=[c.weight for c in pool])[0]
        ordered.append(pick)
        pool = [c for c in pool if c is not pick]
    return ordered


@dataclass
class LatencyTracker:
    """Exponential moving average of time to first token per candidate label."""

    alpha: float = 0.2
    averages: dict[str, float] = field(default_factory=dict)

    def observe(self, label: str, seconds: float) -> None:
        previous = self.averages.get(label)
        self.averages[label] = (
            seconds if previous is None else previous + self.alpha * (seconds - previous)
        )

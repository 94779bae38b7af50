"""Model aliases and the candidates behind them.

A route maps an alias callers use ("default", "local") onto ordered candidates, each a
provider and a model with its limits. Pure data and lookups, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley_runtime.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Candidate:
    """One provider and model that can answer for an alias."""

    provider: str
    model: str
    context_window: int = 128_000
    max_output_tokens: int = 16_384

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class Route:
    alias: str
    candidates: tuple[Candidate, ...]

    @property
    def max_output_tokens(self) -> int:
        return max(c.max_output_tokens for c in self.candidates)

    @property
    def context_window(self) -> int:
        return min(c.context_window for c in self.candidates)


@dataclass(frozen=True, slots=True)
class RouteTable:
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

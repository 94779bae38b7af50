"""Tiers of limits, and which tenant is on which: the ``LIMITS_FILE``, read and validated.

A tier holds, per route class (``chat``: a turn; ``documents``: a document sent to ingest;
``reads``: every other route), a request rate for each subject (the API key a request used,
its user, its tenant); the concurrent streams of a user and of a tenant; and the tokens a user
and a tenant may use per day and per month. Anything left out is unlimited::

    tiers:
      gold:
        chat: {api_key: 300/minute, user: 120/minute, tenant: 3000/minute}
        reads: {user: {rate: 20/second, burst: 100}}
        streams: {user: 16, tenant: 400}
        tokens:
          user: {day: 2000000, month: 20000000}
          tenant: {month: 500000000}
    tenants:
      acme: gold

A rate is ``<count>/<second|minute|hour|day>``: ``count`` requests at once, replenished evenly
over the period (one each ``period / count``); ``burst`` sets how many may go at once instead.
The tiers ``standard`` (the default one) and ``unlimited`` are built in; a file may redefine
them. Plain data and checks, no I/O beyond reading the file once at start.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

RouteClass = Literal["chat", "documents", "reads"]
ROUTE_CLASSES: tuple[RouteClass, ...] = ("chat", "documents", "reads")
Subject = Literal["api_key", "user", "tenant"]
Period = Literal["day", "month"]

_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86_400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$")


class Rate(BaseModel):
    """``count`` requests per ``period_seconds``, of which ``burst`` may go at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(gt=0)
    period_seconds: float = Field(gt=0)
    burst: int = Field(gt=0)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = {"rate": value}
        if isinstance(value, Mapping) and "rate" in value:
            extra = set(value) - {"rate", "burst"}
            if extra:
                raise ValueError(f"unknown key {sorted(extra)[0]!r} (rate, burst)")
            matched = _RATE.match(str(value["rate"]))
            if not matched:
                raise ValueError("a rate is written <count>/<second|minute|hour|day>")
            count = int(matched.group(1))
            return {
                "count": count,
                "period_seconds": _UNITS[matched.group(2)],
                "burst": value.get("burst", count),
            }
        return value

    @property
    def interval(self) -> float:
        """Seconds between two requests at the sustained rate."""
        return self.period_seconds / self.count

    def __str__(self) -> str:
        said = f"{self.count} per {self.period_seconds:g} s"
        return said if self.burst == self.count else f"{said}, {self.burst} at once"


class ClassRates(BaseModel):
    """The rates of one route class, per subject; None is unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: Rate | None = None
    user: Rate | None = None
    tenant: Rate | None = None

    def of(self, subject: Subject) -> Rate | None:
        rate: Rate | None = getattr(self, subject)
        return rate


class Streams(BaseModel):
    """Streamed turns open at once, per user and per tenant; None is unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: int | None = Field(None, gt=0)
    tenant: int | None = Field(None, gt=0)


class TokenQuota(BaseModel):
    """Tokens (prompt and answer) per calendar day and month, UTC; None is unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    day: int | None = Field(None, gt=0)
    month: int | None = Field(None, gt=0)

    def of(self, period: Period) -> int | None:
        quota: int | None = getattr(self, period)
        return quota


class Tokens(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user: TokenQuota = TokenQuota()
    tenant: TokenQuota = TokenQuota()


class Tier(BaseModel):
    """Every limit of a tenant on this tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chat: ClassRates = ClassRates()
    documents: ClassRates = ClassRates()
    reads: ClassRates = ClassRates()
    streams: Streams = Streams()
    tokens: Tokens = Tokens()

    def rates(self, route_class: RouteClass) -> ClassRates:
        rates: ClassRates = getattr(self, route_class)
        return rates


def _per_minute(api_key: int, user: int, tenant: int) -> ClassRates:
    return ClassRates.model_validate(
        {"api_key": f"{api_key}/minute", "user": f"{user}/minute", "tenant": f"{tenant}/minute"}
    )


# Generous enough for any interactive client, tight enough that one runaway script cannot take
# a replica; token quotas are a deployment's business decision, so none by default.
BUILT_IN: dict[str, Tier] = {
    "standard": Tier(
        chat=_per_minute(120, 120, 1200),
        documents=_per_minute(120, 120, 1200),
        reads=_per_minute(1200, 1200, 12_000),
        streams=Streams(user=32, tenant=512),
    ),
    "unlimited": Tier(),
}


class LimitsFile(BaseModel):
    """The ``LIMITS_FILE``: tiers by name, and each listed tenant's tier."""

    model_config = ConfigDict(extra="forbid")

    tiers: dict[str, Tier] = Field(default_factory=dict)
    tenants: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """Which tier each tenant is on; unlisted tenants are on ``default_tier``."""

    tiers: Mapping[str, Tier]
    tenants: Mapping[str, str]
    default_tier: str

    def tier_of(self, tenant: str) -> tuple[str, Tier]:
        name = self.tenants.get(tenant, self.default_tier)
        return name, self.tiers[name]


def _first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def load_policy(path: Path | None, default_tier: str) -> Policy:
    """The policy of ``path`` (or the built-in tiers alone), else ``ValueError`` naming the
    first problem in one line."""
    tiers = dict(BUILT_IN)
    tenants: dict[str, str] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ValueError(f"LIMITS_FILE {path}: cannot be read ({error.strerror})") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"LIMITS_FILE {path}: not valid YAML{line}") from None
        try:
            parsed = LimitsFile.model_validate(raw or {})
        except ValidationError as error:
            raise ValueError(f"LIMITS_FILE {path}: {_first_problem(error)}") from None
        tiers.update(parsed.tiers)
        tenants = parsed.tenants
        for tenant, tier in tenants.items():
            if tier not in tiers:
                raise ValueError(f"LIMITS_FILE {path}: tenants.{tenant}: no tier named {tier!r}")
    if default_tier not in tiers:
        known = ", ".join(sorted(tiers))
        raise ValueError(f"LIMITS_DEFAULT_TIER {default_tier!r} is not a tier ({known})")
    return Policy(tiers=tiers, tenants=tenants, default_tier=default_tier)

"""Typed settings shared by every service, and the one way to load them.

Each service subclasses :class:`ServiceSettings` in its own ``settings.py``. Variables are read
from the environment without a prefix (``GRPC_PORT``, ``DATABASE_URL``...), as they are set per
container. A wrong value stops the service at start with one line naming the variable.
"""

from __future__ import annotations

import sys
from typing import Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProcessSettings(BaseSettings):
    """Settings every Parley process has: logs, traces, metrics, shutdown."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port; 0 disables the endpoint."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = Field(
        "json", description="JSON lines (for a log store), or text lines for a terminal."
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None, description="OTLP/gRPC endpoint for traces; unset disables tracing."
    )
    otel_traces_sampler_ratio: float = Field(1.0, ge=0.0, le=1.0)
    otel_python_disabled_instrumentations: str = Field(
        "",
        description="Library instrumentations left off while tracing, comma-separated: "
        "fastapi, sqlalchemy, redis, aiohttp-client.",
    )
    shutdown_grace_seconds: float = Field(
        10.0, gt=0, description="How long in-flight calls may drain after SIGTERM."
    )


class ServiceSettings(ProcessSettings):
    """Settings every Parley gRPC service has."""

    grpc_host: str = Field("127.0.0.1", description="Address the gRPC server binds to.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port.")
    grpc_max_connection_age_seconds: float = Field(
        300.0, gt=0, description="Clients reconnect after this, so new replicas get traffic."
    )
    grpc_max_stream_seconds: float = Field(
        330.0,
        gt=0,
        description="The longest call a client of this service may make (a streamed turn's "
        "deadline, with a margin): an aged connection lets its calls run this long.",
    )


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], service: str) -> S:
    """Build the settings from the environment, or exit with one line naming the variable."""
    try:
        return cls()
    except ValidationError as error:
        first = error.errors()[0]
        variable = "_".join(str(part) for part in first["loc"]).upper()
        if not variable:
            # A check across several settings: its message names the variables itself.
            message = str(first["msg"]).removeprefix("Value error, ")
            print(f"{service}: invalid settings: {message}", file=sys.stderr)
            raise SystemExit(2) from None
        value = first.get("input")
        shown = "" if isinstance(value, dict) else f"={value!r}"
        print(f"{service}: invalid setting {variable}{shown}: {first['msg']}", file=sys.stderr)
        raise SystemExit(2) from None

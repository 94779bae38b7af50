"""The gateway's entry point.

parley-gateway                      serve the HTTP API
parley-gateway token --tenant T --user U [--scopes "read chat"] [--ttl 3600]
                                    print a development token signed with AUTH_SECRET
parley-gateway migrate upgrade|downgrade [revision]
                                    apply or revert the gateway's own migrations
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Iterator

import uvicorn

from parley_gateway.app import create_app
from parley_gateway.auth import DEFAULT_SCOPES, DEFAULT_TTL_SECONDS, SCOPES, issue_token
from parley_gateway.guardrails.logs import install_log_redaction
from parley_gateway.identity import MIGRATIONS, VERSION_TABLE
from parley_gateway.settings import DEV_SECRET, Settings
from parley_runtime.gc_tuning import settle_after_startup
from parley_runtime.logs import setup_logging
from parley_runtime.metrics import serve_metrics
from parley_runtime.settings import load_settings
from parley_runtime.telemetry import setup_tracing

log = logging.getLogger("parley.gateway")


class _Server(uvicorn.Server):
    """uvicorn, exiting with status 0 after a graceful shutdown on SIGTERM or SIGINT, with
    the garbage collector set as every service's once started (``gc_tuning``).

    uvicorn re-raises the signal once it has drained, so the process would end "killed by
    SIGTERM"; every Parley service exits 0 after draining instead.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            settle_after_startup()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def serve(settings: Settings) -> None:
    setup_logging("gateway", settings.log_level, settings.log_format)
    install_log_redaction()
    setup_tracing(
        "gateway",
        settings.otel_exporter_otlp_endpoint,
        settings.otel_traces_sampler_ratio,
        settings.otel_python_disabled_instrumentations,
    )
    if settings.auth_mode == "dev" and settings.auth_secret == DEV_SECRET:
        log.warning("AUTH_SECRET is the development default; set it before exposing the API")
    serve_metrics(settings.http_host, settings.metrics_port)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    _Server(config).run()


def main() -> None:
    parser = argparse.ArgumentParser(prog="parley-gateway", description="Parley's public API")
    commands = parser.add_subparsers(dest="command")
    token = commands.add_parser("token", help="print a bearer token for development")
    token.add_argument("--tenant", required=True)
    token.add_argument("--user", required=True)
    token.add_argument("--scopes", default=" ".join(DEFAULT_SCOPES))
    token.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="lifetime in seconds")
    migrate = commands.add_parser("migrate", help="apply or revert the gateway's migrations")
    migrate.add_argument("direction", choices=["upgrade", "downgrade"])
    migrate.add_argument("revision", nargs="?")
    args = parser.parse_args()
    settings = load_settings(Settings, "gateway")
    if args.command == "migrate":
        from parley_runtime import db

        setup_logging("gateway", settings.log_level, settings.log_format)
        step = db.upgrade if args.direction == "upgrade" else db.downgrade
        revision = args.revision or ("head" if args.direction == "upgrade" else "base")
        asyncio.run(step(MIGRATIONS, settings.database_url, VERSION_TABLE, revision))
        return
    if args.command == "token":
        unknown = sorted(set(args.scopes.split()) - set(SCOPES))
        if unknown:
            sys.exit(f"gateway: unknown scopes {', '.join(unknown)}; known: {', '.join(SCOPES)}")
        if not 0 < args.ttl <= settings.auth_max_token_lifetime_seconds:
            sys.exit(
                "gateway: --ttl must be between 1 and AUTH_MAX_TOKEN_LIFETIME_SECONDS "
                f"({settings.auth_max_token_lifetime_seconds}); a longer token is refused"
            )
        print(
            issue_token(
                settings.auth_secret,
                settings.auth_issuer,
                tenant=args.tenant,
                user=args.user,
                scopes=tuple(args.scopes.split()),
                ttl_seconds=args.ttl,
            )
        )
        return
    serve(settings)


if __name__ == "__main__":
    main()

"""The gateway's entry point.

parley-gateway                      serve the HTTP API
parley-gateway token --tenant T --user U [--scopes "chat documents"] [--ttl 86400]
                                    print a bearer token signed with AUTH_SECRET
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator

import uvicorn

from parley_gateway.app import create_app
from parley_gateway.auth import DEFAULT_SCOPES, issue_token
from parley_gateway.settings import DEV_SECRET, Settings
from parley_runtime.logs import setup_logging
from parley_runtime.metrics import serve_metrics
from parley_runtime.settings import load_settings
from parley_runtime.telemetry import setup_tracing

log = logging.getLogger("parley.gateway")


class _Server(uvicorn.Server):
    """uvicorn, exiting with status 0 after a graceful shutdown on SIGTERM or SIGINT.

    uvicorn re-raises the signal once it has drained, so the process would end "killed by
    SIGTERM"; every Parley service exits 0 after draining instead.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def serve(settings: Settings) -> None:
    setup_logging("gateway", settings.log_level)
    setup_tracing(
        "gateway", settings.otel_exporter_otlp_endpoint, settings.otel_traces_sampler_ratio
    )
    if settings.auth_secret == DEV_SECRET:
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
    token.add_argument("--ttl", type=int, default=86_400, help="lifetime in seconds")
    args = parser.parse_args()
    settings = load_settings(Settings, "gateway")
    if args.command == "token":
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

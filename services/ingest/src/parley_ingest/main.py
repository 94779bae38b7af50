"""ingest's entry point.

parley-ingest                                   serve (gRPC and the job worker)
parley-ingest migrate upgrade|downgrade [revision]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from parley.ingest.v1 import ingest_pb2_grpc as pb_grpc
from parley_ingest.adapters.index import RetrievalIndex
from parley_ingest.adapters.store import IngestStore
from parley_ingest.api import IngestServicer
from parley_ingest.jobs import JobRunner
from parley_ingest.settings import Settings
from parley_runtime import db
from parley_runtime.grpc_server import Registration, Wiring, run, serve
from parley_runtime.logs import setup_logging
from parley_runtime.settings import load_settings
from parley_runtime.telemetry import setup_tracing

SERVICE = "parley.ingest.v1.Ingest"
MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_ingest"


async def build(settings: Settings) -> Wiring:
    """Store, retrieval client, the job worker (started) and the servicer."""
    if settings.db_auto_migrate:
        await db.upgrade(MIGRATIONS, settings.database_url, VERSION_TABLE)
    engine = db.create_engine(settings.database_url)
    store = IngestStore(engine)
    index = RetrievalIndex(settings.retrieval_addr, settings.index_timeout_seconds)
    jobs = JobRunner(store, index, settings)
    await jobs.start()
    servicer = IngestServicer(store, jobs, index, settings.max_document_bytes)

    async def close() -> None:
        await jobs.close()
        await index.close()
        await engine.dispose()

    return Wiring(
        registrations=[
            Registration(SERVICE, lambda s: pb_grpc.add_IngestServicer_to_server(servicer, s))
        ],
        close=close,
    )


async def _serve(settings: Settings) -> None:
    wiring = await build(settings)
    await serve("ingest", settings, wiring.registrations, on_stop=wiring.close)


def main() -> None:
    parser = argparse.ArgumentParser(prog="parley-ingest")
    commands = parser.add_subparsers(dest="command")
    migrate = commands.add_parser("migrate", help="apply or revert migrations")
    migrate.add_argument("direction", choices=["upgrade", "downgrade"])
    migrate.add_argument("revision", nargs="?")
    args = parser.parse_args()
    settings = load_settings(Settings, "ingest")
    setup_logging("ingest", settings.log_level)
    if args.command == "migrate":
        step = db.upgrade if args.direction == "upgrade" else db.downgrade
        revision = args.revision or ("head" if args.direction == "upgrade" else "base")
        asyncio.run(step(MIGRATIONS, settings.database_url, VERSION_TABLE, revision))
        return
    setup_tracing(
        "ingest", settings.otel_exporter_otlp_endpoint, settings.otel_traces_sampler_ratio
    )
    run(lambda: _serve(settings))


if __name__ == "__main__":
    main()

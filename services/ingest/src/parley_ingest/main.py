"""ingest's entry point.

parley-ingest                                   serve (gRPC and the job worker)
parley-ingest migrate upgrade|downgrade [revision]
parley-ingest reindex --all|--tenant T [--knowledge-base KB] [--dry-run]
                                                queue every document's indexing again
"""

from __future__ import annotations

from pathlib import Path

from parley.ingest.v1 import ingest_pb2_grpc as pb_grpc
from parley_ingest.adapters.retrieval import RetrievalIndex
from parley_ingest.adapters.store import IngestStore
from parley_ingest.api import IngestServicer
from parley_ingest.documents import Documents
from parley_ingest.jobs import JobRunner
from parley_ingest.reindex import COMMAND as REINDEX
from parley_ingest.settings import Settings
from parley_runtime import db
from parley_runtime.cli import Migrations, service_main
from parley_runtime.grpc_server import Registration, Wiring

SERVICE = "parley.ingest.v1.Ingest"
MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_ingest"


async def build(settings: Settings) -> Wiring:
    """Store, retrieval client, the job worker (started) and the servicer."""
    if settings.db_auto_migrate:
        await db.upgrade(MIGRATIONS, settings.database_url, VERSION_TABLE)
    engine = db.create_engine(settings.database_url)
    store = IngestStore(engine, settings.worker, settings.job_lease_seconds)
    index = RetrievalIndex(settings.retrieval_addr, settings.index_timeout_seconds)
    jobs = JobRunner(store, index, settings)
    await jobs.start()
    servicer = IngestServicer(Documents(store, jobs, index, settings.max_document_bytes))

    async def close() -> None:
        await jobs.close()
        await index.close()
        await engine.dispose()

    return Wiring(
        registrations=[
            Registration(SERVICE, lambda s: pb_grpc.add_IngestServicer_to_server(servicer, s))
        ],
        close=close,
        ready=db.readiness(engine),
    )


def main() -> None:
    service_main("ingest", Settings, build, Migrations(MIGRATIONS, VERSION_TABLE), [REINDEX])


if __name__ == "__main__":
    main()

"""The operator's re-index: every document of every tenant (or of one, or of a knowledge base
name) indexed again from the bytes ingest keeps, after retrieval's embedding model or
ingest's chunking changed.

    parley-ingest reindex --all [--knowledge-base KB] [--dry-run]
    parley-ingest reindex --tenant T [--knowledge-base KB] [--dry-run]

It works on ingest's database directly (``DATABASE_URL``, read as the service reads it) and
only queues: each document that is not being deleted gets a new version of its stored bytes
and a QUEUED job, as ``ReindexDocuments`` gives one knowledge base's; the running replicas take
the jobs up (each looks for queued jobs every half ``JOB_LEASE_SECONDS``). Each new version
replaces the old one in search once indexed whole, so search goes on meanwhile. A dry run
counts the documents it would queue and changes nothing. It prints one line per tenant and
knowledge base (tenant, name, documents), then the total.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from parley_ingest.adapters.store import IngestStore
from parley_ingest.settings import Settings
from parley_runtime import db
from parley_runtime.cli import Command


def arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--all", action="store_true", help="the documents of every tenant")
    scope.add_argument("--tenant", help="the documents of this tenant only")
    parser.add_argument("--knowledge-base", help="only knowledge bases of this name")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be queued; change nothing"
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Queue the jobs (or count them, for a dry run); the exit status."""
    tenant: str | None = None if args.all else args.tenant
    if tenant is not None and not tenant.strip():
        print("parley-ingest reindex: --tenant needs a tenant id", file=sys.stderr)
        return 2
    engine = db.create_engine(settings.database_url)
    try:
        store = IngestStore(engine)
        if args.dry_run:
            counts = await store.reindex_counts(tenant, args.knowledge_base)
            for tenant_id, kb, documents in counts:
                print(f"{tenant_id}\t{kb}\t{documents}")
            total = sum(documents for _, _, documents in counts)
            print(f"dry run: would queue {total} jobs in {len(counts)} knowledge bases")
            return 0
        queued: Counter[tuple[str, str]] = Counter()
        async for batch in store.reindex(tenant, args.knowledge_base):
            queued.update((r.tenant_id, r.knowledge_base_id) for r in batch)
        for (tenant_id, kb), documents in sorted(queued.items()):
            print(f"{tenant_id}\t{kb}\t{documents}")
        print(
            f"queued {queued.total()} jobs in {len(queued)} knowledge bases: the running "
            "ingest replicas take them up"
        )
        return 0
    finally:
        await engine.dispose()


COMMAND = Command[Settings](
    "reindex", "index documents again from their stored bytes (every tenant's)", arguments, run
)

"""ingest's migrations: they go up and down, and build exactly what ``tables.py`` describes."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from parley_ingest.main import MIGRATIONS, VERSION_TABLE
from parley_ingest.tables import Base
from parley_runtime import db


async def _tables(url: str) -> set[str]:
    engine = db.create_engine(url)
    try:
        async with engine.connect() as connection:
            names: list[str] = await connection.run_sync(
                lambda sync: sync.dialect.get_table_names(sync)
            )
    finally:
        await engine.dispose()
    return set(names)


async def test_migrations_go_up_and_down(database_url: str) -> None:
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)
    assert {"documents", "document_contents", "jobs"} <= await _tables(database_url)
    await db.downgrade(MIGRATIONS, database_url, VERSION_TABLE)
    assert not {"documents", "document_contents", "jobs"} & await _tables(database_url)
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)


async def test_the_migrations_build_what_the_tables_describe(database_url: str) -> None:
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)
    engine = db.create_engine(database_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(
                        sync, opts={"version_table": VERSION_TABLE, "compare_type": True}
                    ),
                    Base.metadata,
                )
            )
    finally:
        await engine.dispose()
    assert differences == []

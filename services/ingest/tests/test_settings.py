"""Settings: the embedded defaults, and a wrong value refused naming its variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from parley_ingest.settings import Settings


def test_the_defaults_run_on_one_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRPC_PORT", "DATABASE_URL", "RETRIEVAL_ADDR", "MAX_DOCUMENT_BYTES"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.grpc_port == 50064
    assert settings.database_url == "sqlite:///.parley/ingest.db"
    assert settings.retrieval_addr == "127.0.0.1:50063"
    assert settings.max_document_bytes == 20 * 1024 * 1024
    assert settings.db_auto_migrate


def test_an_overlap_of_half_a_chunk_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(chunk_size_chars=1000, chunk_overlap_chars=500)
    assert raised.value.errors()[0]["loc"] == ("chunk_overlap_chars",)

"""What a user notices when parts of a running platform fail, through the public API.

One platform for the module, as production runs it: conversation, ingest and llm-router on a
fresh PostgreSQL database, llm-router's breakers and cache on a private ``redis-server`` (its
own loopback port, stopped and started by the tests), and a routes file whose ``default``
alias has two candidates, each an OpenAI-protocol fake: ``primary`` and ``backup``.

- ingest killed (SIGKILL) mid-job and restarted, as the same replica and as another one:
  the job is taken up again within a bounded time and the document becomes searchable;
- retrieval killed during a turn on a knowledge base: the turn still ends with one terminal
  event, a turn while it is down answers without documents, and citations come back with it;
- Redis lost and frozen under a bounded load of turns: no turn fails, the cache misses while
  Redis is away and works again once it is back;
- every PostgreSQL connection of the services cut between requests: the next requests succeed;
- the primary provider answering 429 or 500, or hanging, before its first token: the backup
  answers and the user sees no error; dropping after it: one ``error`` event, the partial
  answer stored.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from parley_devstack import Platform
from parley_fakes import Behaviour, Fake, OpenAIFake
from parley_testkit.redis import PrivateRedis

from .api import public_api, stream_interrupted
from .sse import Event, events

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

JOB_LEASE_SECONDS = 4.0
FIRST_TOKEN_TIMEOUT = 1.0
ROUTES = """\
default_model: default
providers:
  primary: {{type: openai_compatible, base_url: "{primary}/v1"}}
  backup: {{type: openai_compatible, base_url: "{backup}/v1"}}
  here: {{type: local}}
models:
  # Parley's own calls around a turn (titles, summaries, follow-up rewrites, memory): the
  # scripted behaviours of the fakes belong to the turns.
  housekeeping: {{candidates: [{{provider: here, model: extractive-v1}}]}}
  default:
    candidates:
      - provider: primary
        model: fake-primary
        max_attempts: 1
        timeouts: {{connect: 1, first_token: {first_token}, between_tokens: 5, total: 60}}
      - {{provider: backup, model: fake-backup, max_attempts: 1}}
"""


HOUSEKEEPING = {
    f"{work}_MODEL": "housekeeping" for work in ("TITLE", "SUMMARY", "REWRITE", "MEMORY")
}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[tuple[str, str]]:
    """An empty PostgreSQL database: its URL and its name; dropped afterwards."""
    import asyncpg
    from sqlalchemy.engine import make_url

    server = make_url(server_url)
    name = f"parley_faults_{uuid.uuid4().hex[:12]}"
    admin_dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield server.set(database=name).render_as_string(hide_password=False), name
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@dataclass
class Running:
    platform: Platform
    client: httpx.AsyncClient
    primary: Fake
    backup: Fake
    redis: PrivateRedis
    admin_dsn: str
    database: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str
) -> AsyncIterator[Running]:
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not installed")
    data = Path(tmp_path_factory.mktemp("faults-more"))
    redis = PrivateRedis(data)
    await redis.start()
    try:
        async with fresh_database(postgres_server_url) as (database_url, database):
            with (
                OpenAIFake(tokens=20, token_delay_ms=10) as primary,
                OpenAIFake(tokens=20, token_delay_ms=10) as backup,
            ):
                routes = data / "routes.yaml"
                routes.write_text(
                    ROUTES.format(
                        primary=primary.base_url,
                        backup=backup.base_url,
                        first_token=FIRST_TOKEN_TIMEOUT,
                    )
                )
                platform = Platform(
                    data_dir=data,
                    env={"LOG_LEVEL": "WARNING"},
                    per_service_env={
                        "conversation": {
                            "DATABASE_URL": database_url,
                            "RETRIEVAL_TIMEOUT_SECONDS": "2",
                            **HOUSEKEEPING,
                            # A turn that offers tools is never answered from the cache,
                            # which the Redis test below counts on.
                            "TOOLS": "",
                        },
                        "ingest": {
                            "DATABASE_URL": database_url,
                            "REPLICA_ID": "ingest-a",
                            "JOB_LEASE_SECONDS": str(JOB_LEASE_SECONDS),
                            # Small chunks: a document of a few hundred takes seconds to
                            # index, long enough to be killed in the middle.
                            "CHUNK_SIZE_CHARS": "300",
                            "CHUNK_OVERLAP_CHARS": "0",
                            "WORKER_CONCURRENCY": "1",
                        },
                        "llm-router": {
                            "DATABASE_URL": database_url,
                            "ROUTES_FILE": str(routes),
                            "REDIS_URL": redis.url,
                        },
                    },
                )
                async with public_api(platform) as client:
                    admin = postgres_server_url
                    yield Running(platform, client, primary, backup, redis, admin, database)
    finally:
        if redis.process is not None and redis.process.returncode is None:
            await redis.thaw()
            await redis.kill()


# -- helpers ---------------------------------------------------------------------------------


async def _conversation(client: httpx.AsyncClient, **settings: Any) -> str:
    created = await client.post("/v1/conversations", json={"settings": settings})
    assert created.status_code == 201, created.text
    conversation_id: str = created.json()["id"]
    return conversation_id


async def _turn(client: httpx.AsyncClient, conversation_id: str, content: str) -> list[Event]:
    async with client.stream(
        "POST",
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": content},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200, await response.aread()
        return [event async for event in events(response)]


def _terminal(got: list[Event]) -> Event:
    """The one terminal event of a turn, checked to be one and last."""
    names = [e.name for e in got]
    assert names.count("done") + names.count("error") == 1, names
    assert names[-1] in ("done", "error"), names
    return got[-1]


def _handbook(edition: str, sections: int) -> str:
    return "\n\n".join(
        f"# Region {i}\n\nIn the {edition} edition, the travel allowance for region {i} is "
        f"{10 + i} euros a day. "
        f"Claims for region {i} reach the regional office before the fifth of the month."
        for i in range(sections)
    )


async def _upload(client: httpx.AsyncClient, kb: str, title: str, content: str) -> str:
    created = await client.post(
        f"/v1/knowledge-bases/{kb}/documents", json={"title": title, "content": content}
    )
    assert created.status_code == 201, created.text
    job_id: str = created.json()["job"]["id"]
    return job_id


async def _job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any] | None:
    """The job, or None while the gateway cannot reach ingest."""
    got = await client.get(f"/v1/jobs/{job_id}")
    if got.status_code == 503:
        return None
    assert got.status_code == 200, got.text
    job: dict[str, Any] = got.json()
    return job


async def _until(client: httpx.AsyncClient, job_id: str, within: float, *states: str) -> float:
    """Seconds until the job is in one of ``states`` (at most ``within``)."""
    started = time.monotonic()
    job = None
    while time.monotonic() - started < within:
        job = await _job(client, job_id)
        if job is not None and job["state"] in states:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"job not {states} within {within} s: {job}")


async def _killed_mid_job(running: Running, title: str) -> tuple[str, dict[str, Any]]:
    """Upload a document that takes seconds to index; kill ingest while it is indexing.
    Returns the job id and the job as it was last seen running."""
    client, platform = running.client, running.platform
    job_id = await _upload(client, "regions", title, _handbook(title, sections=240))
    await _until(client, job_id, 20, "running")
    while (job := await _job(client, job_id)) is not None and job["stage"] != "indexing":
        assert job["state"] == "running", job
        await asyncio.sleep(0.02)
    assert job is not None
    await platform.kill("ingest")
    return job_id, job


async def _picked_up(client: httpx.AsyncClient, job_id: str, seen: dict[str, Any]) -> float:
    """Seconds until a new worker claims the job (its ``updated_at`` moves on)."""
    started = time.monotonic()
    while True:
        job = await _job(client, job_id)
        if job is not None and job["updated_at"] != seen["updated_at"]:
            return time.monotonic() - started
        assert time.monotonic() - started < 60, job
        await asyncio.sleep(0.05)


# -- ingest ----------------------------------------------------------------------------------


async def test_a_killed_ingest_process_takes_its_job_up_again_at_restart(
    running: Running,
) -> None:
    client, platform = running.client, running.platform
    job_id, seen = await _killed_mid_job(running, "Regions A")
    assert seen["state"] == "running"
    # While ingest is down its job reads as unavailable, not as a made-up state.
    assert (await client.get(f"/v1/jobs/{job_id}")).status_code == 503

    await platform.restart("ingest")
    # The same replica (same REPLICA_ID) takes its own job back at start, not after the lease.
    assert await _picked_up(client, job_id, seen) < 1.5
    await _until(client, job_id, 30, "succeeded", "failed")
    job = await _job(client, job_id)
    assert job is not None
    assert (job["state"], job["error"]) == ("succeeded", None)
    assert job["chunks_indexed"] == job["chunks_total"] > 100
    document = (await client.get(f"/v1/documents/{job['document_id']}")).json()
    assert (document["status"], document["chunk_count"]) == ("ready", job["chunks_total"])

    # Searchable: a turn on that knowledge base cites it.
    conversation_id = await _conversation(client, knowledge_base_id="regions")
    got = await _turn(client, conversation_id, "What is the travel allowance for region 37?")
    assert _terminal(got).name == "done"
    citations = next(e for e in got if e.name == "citations").data["citations"]
    assert "Regions A" in {c["title"] for c in citations}


async def test_a_job_of_a_dead_replica_is_taken_over_once_its_lease_runs_out(
    running: Running,
) -> None:
    client, platform = running.client, running.platform
    job_id, seen = await _killed_mid_job(running, "Regions B")
    # Another replica, not the dead one's successor: it must wait for the lease.
    platform.specs["ingest"].env["REPLICA_ID"] = "ingest-b"
    try:
        await platform.restart("ingest")
        taken_after = await _picked_up(client, job_id, seen)
        # Within a lease and the sweep's half lease after the last renewal, whatever it was.
        assert taken_after < JOB_LEASE_SECONDS * 1.5 + 1
        await _until(client, job_id, 30, "succeeded", "failed")
        job = await _job(client, job_id)
        assert job is not None
        assert job["state"] == "succeeded", job
    finally:
        platform.specs["ingest"].env["REPLICA_ID"] = "ingest-a"


# -- retrieval -------------------------------------------------------------------------------


async def test_a_killed_retrieval_costs_a_turn_its_documents_only_while_it_is_down(
    running: Running,
) -> None:
    client, platform = running.client, running.platform
    job_id = await _upload(
        client, "policies", "Leave policy", "# Leave\n\nEmployees have 25 days of paid leave."
    )
    await _until(client, job_id, 20, "succeeded")
    conversation_id = await _conversation(client, knowledge_base_id="policies")
    question = "How many days of paid leave?"

    # Killed in the middle of an answer: the answer goes on (its passages were found).
    running.primary.push(Behaviour(tokens=40, token_delay_ms=25))

    async def kill() -> None:
        await platform.kill("retrieval")

    path = f"/v1/conversations/{conversation_id}/messages"
    received, _ = await stream_interrupted(client, path, {"content": question}, 2, kill)
    assert _terminal(received).name == "done"
    assert any(e.name == "citations" for e in received)

    # While it is down: an answer without documents, promptly, and no error.
    started = time.monotonic()
    got = await _turn(client, conversation_id, question)
    assert time.monotonic() - started < 4
    assert _terminal(got).name == "done"
    assert not any(e.name == "citations" for e in got)
    prompt = running.primary.requests[-1].body["messages"]
    assert not any("<documents>" in str(m.get("content")) for m in prompt)

    # Back: the next turns are grounded again, once conversation's channel has reconnected
    # (its retry interval is capped at 1 s, with grpc's jitter of up to a fifth more).
    await platform.restart("retrieval")
    back_at = time.monotonic()
    while True:
        got = await _turn(client, conversation_id, question)
        assert _terminal(got).name == "done"
        if any(e.name == "citations" for e in got):
            break
        assert time.monotonic() - back_at < 1.5, "retrieval unused after its restart"
    citations = next(e for e in got if e.name == "citations").data["citations"]
    assert citations[0]["title"] == "Leave policy"


# -- Redis -----------------------------------------------------------------------------------


async def test_losing_redis_under_load_fails_no_turn(running: Running) -> None:
    client, redis, primary = running.client, running.redis, running.primary

    async def asked_twice(question: str) -> int:
        """Provider calls for the same cacheable question asked in two new conversations."""
        before = len(primary.requests)
        for _ in range(2):
            conversation_id = await _conversation(client, temperature=0)
            got = await _turn(client, conversation_id, question)
            assert _terminal(got).name == "done", got[-1].data
        return len(primary.requests) - before

    assert await asked_twice("Cached before?") == 1  # Redis holds the cache

    # A bounded load: 48 turns, 6 at a time (a conversation answers one message at a time:
    # each of 6 users sends 8 in turn); Redis is killed, restarted, frozen and thawed while
    # they run.
    total, in_flight = 48, 6
    finished: list[Event] = []
    conversations = [await _conversation(client) for _ in range(in_flight)]

    # After so many turns have ended: lost, back empty (what it held is gone), frozen, thawed.
    outages = {8: redis.kill, 20: redis.start, 28: redis.freeze, 36: redis.thaw}

    async def user(conversation_id: str, first: int) -> None:
        for i in range(first, total, in_flight):
            got = await _turn(client, conversation_id, f"Question {i}?")
            finished.append(_terminal(got))
            if (outage := outages.pop(len(finished), None)) is not None:
                await outage()

    users = (user(cid, first) for first, cid in enumerate(conversations))
    await asyncio.wait_for(asyncio.gather(*users), 120)
    assert outages == {}
    assert len(finished) == total
    failed = [e.data for e in finished if e.name != "done"]
    assert failed == []
    assert {e.data["message"]["status"] for e in finished} == {"complete"}

    # The cache works again with Redis back.
    assert await asked_twice("Cached after?") == 1


# -- PostgreSQL ------------------------------------------------------------------------------


async def _cut_connections(running: Running) -> int:
    """Terminate every backend on the services' database; how many there were."""
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(running.admin_dsn).set(drivername="postgresql")
    admin = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        cut: int = await admin.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()) AS t",
            running.database,
        )
    finally:
        await admin.close()
    return cut


async def test_cut_database_connections_fail_no_request(running: Running) -> None:
    client = running.client
    conversation_id = await _conversation(client)
    got = await _turn(client, conversation_id, "Before the cut?")
    assert _terminal(got).name == "done"
    job_id = await _upload(client, "cuts", "Before", "Written before the cut.")
    await _until(client, job_id, 20, "succeeded")

    # Every request after a cut finds its pool's connections dead and must not notice.
    requests = [
        lambda: client.get(f"/v1/conversations/{conversation_id}"),
        lambda: client.get(f"/v1/conversations/{conversation_id}/messages"),
        lambda: client.post("/v1/conversations", json={}),
        lambda: client.get(f"/v1/jobs/{job_id}"),
        lambda: client.get("/v1/knowledge-bases/cuts/documents"),
    ]
    # At first every service's pool holds connections; after that, the one the previous
    # request opened again.
    assert await _cut_connections(running) >= 2
    for request in requests:
        response = await request()
        assert response.status_code in (200, 201), response.text
        assert await _cut_connections(running) >= 1

    got = await _turn(client, conversation_id, "After the cut?")
    done = _terminal(got)
    assert done.name == "done", done.data
    assert await _cut_connections(running) >= 1
    job_id = await _upload(client, "cuts", "After", "Written after the cut.")
    await _until(client, job_id, 20, "succeeded")
    messages = (await client.get(f"/v1/conversations/{conversation_id}/messages")).json()
    assert [m["status"] for m in messages["messages"]] == ["complete"] * 4


# -- providers -------------------------------------------------------------------------------


async def test_a_failing_primary_before_its_first_token_costs_the_user_nothing(
    running: Running,
) -> None:
    client, primary, backup = running.client, running.primary, running.backup
    conversation_id = await _conversation(client)
    failures = {
        "rate limited": Behaviour(fail_status=429, retry_after=0),
        "server error": Behaviour(fail_status=500),
        "hung": Behaviour(hang=True),
    }
    for what, behaviour in failures.items():
        primary.push(behaviour)
        before = len(backup.requests)
        started = time.monotonic()
        got = await _turn(client, conversation_id, f"Still there when {what}?")
        done = _terminal(got)
        assert done.name == "done", (what, done.data)
        message = done.data["message"]
        assert (message["status"], message["model"]) == ("complete", "backup/fake-backup"), what
        assert message["content"] == "".join(e.data["text"] for e in got if e.name == "delta")
        assert len(backup.requests) == before + 1, what
        # A hang costs the first-token timeout, no more.
        assert time.monotonic() - started < FIRST_TOKEN_TIMEOUT + 2, what

    got = await _turn(client, conversation_id, "And the primary again?")
    assert _terminal(got).data["message"]["model"] == "primary/fake-primary"

    stored = (await client.get(f"/v1/conversations/{conversation_id}/messages")).json()
    assert [m["status"] for m in stored["messages"]] == ["complete"] * 8


async def test_a_primary_dropping_after_its_first_token_ends_the_answer_with_one_error(
    running: Running,
) -> None:
    client, primary, backup = running.client, running.primary, running.backup
    conversation_id = await _conversation(client)
    primary.push(Behaviour(tokens=20, token_delay_ms=10, drop_after_tokens=6))
    before = len(backup.requests)
    got = await _turn(client, conversation_id, "Will this one finish?")
    error = _terminal(got)
    assert error.name == "error"
    streamed = "".join(e.data["text"] for e in got if e.name == "delta")
    assert len(streamed.split()) == 6
    # The answer belonged to the primary once it had spoken: no fallback mixing two answers.
    assert len(backup.requests) == before

    answer = (await client.get(f"/v1/conversations/{conversation_id}/messages")).json()["messages"][
        -1
    ]
    assert (answer["role"], answer["status"], answer["content"]) == (
        "assistant",
        "failed",
        streamed,
    )
    assert answer["error_code"] == error.data["code"]

    # The conversation goes on.
    got = await _turn(client, conversation_id, "And now?")
    assert _terminal(got).name == "done"

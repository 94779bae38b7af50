"""``make run``: the whole platform on embedded defaults, ready to answer.

Starts the five services, loads this repository's README into a demo knowledge base so the
offline local provider has something to quote, creates a conversation, and prints the URL, a
token and a curl command that streams an answer. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
from pathlib import Path

import httpx

from parley_devstack.platform import Platform
from parley_gateway.auth import issue_token
from parley_gateway.settings import Settings as GatewaySettings

DEMO_KB = "parley-docs"
DEMO_QUESTION = "How does a chat turn flow through Parley's services?"


async def _seed(base_url: str, token: str, readme: str | None) -> str:
    """Index the README into the demo knowledge base; return a conversation that uses it."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        if readme is not None:
            created = await client.post(
                f"/v1/knowledge-bases/{DEMO_KB}/documents",
                json={
                    "title": "Parley README",
                    "filename": "README.md",
                    "content": readme,
                    "content_type": "text/markdown",
                    "external_id": "parley-readme",
                },
            )
            created.raise_for_status()
            job_id = created.json()["job"]["id"]
            for _ in range(600):
                job = (await client.get(f"/v1/jobs/{job_id}")).json()
                if job["state"] in ("succeeded", "failed"):
                    break
                await asyncio.sleep(0.1)
        conversation = await client.post(
            "/v1/conversations",
            json={"title": "Welcome to Parley", "settings": {"knowledge_base_id": DEMO_KB}},
        )
        conversation.raise_for_status()
        conversation_id: str = conversation.json()["id"]
        return conversation_id


async def run(data_dir: Path, port: int, readme: str | None) -> int:
    # The chat page's development sign-in: anyone who can reach this loopback port may act
    # as any user, as anyone holding the development secret already can.
    platform = Platform(
        data_dir=data_dir,
        gateway_port=port,
        per_service_env={"gateway": {"DEV_SIGN_IN": "true"}},
    )
    print(f"starting Parley (data in {data_dir}, logs in {data_dir / 'logs'}) ...", flush=True)
    try:
        ready = await platform.start()
    except Exception as error:
        print(f"Parley did not start: {error}", file=sys.stderr)
        return 1
    timings = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in ready.items())
    print(f"ready: {timings}")
    settings = GatewaySettings()
    token = issue_token(settings.auth_secret, settings.auth_issuer, tenant="demo", user="you")
    try:
        conversation_id = await _seed(platform.gateway_url, token, readme)
    except httpx.HTTPError as error:
        print(f"could not prepare the demo conversation: {error}", file=sys.stderr)
        await platform.stop()
        return 1
    model = (
        "OpenAI"
        if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
        else ("the offline local provider (extractive; set OPENAI_API_KEY for a real model)")
    )
    body = shlex.quote(f'{{"content": "{DEMO_QUESTION}"}}')
    print(
        f"""
Parley is running at {platform.gateway_url}  (answers from {model})

Open the chat page: {platform.gateway_url}/  (sign in as any tenant and user)

  export PARLEY_TOKEN={token}

Stream an answer:

  curl -N {platform.gateway_url}/v1/conversations/{conversation_id}/messages \\
    -H "Authorization: Bearer $PARLEY_TOKEN" -H "Accept: text/event-stream" \\
    -H "Content-Type: application/json" -d {body}

API docs: {platform.gateway_url}/docs    Ctrl-C stops everything.
""",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchers = [asyncio.create_task(p.wait()) for p in platform.processes.values()]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *watchers], return_when=asyncio.FIRST_COMPLETED)
    if stopper not in done:
        dead = [n for n, p in platform.processes.items() if p.returncode is not None]
        print(f"{', '.join(dead)} stopped unexpectedly; see {data_dir / 'logs'}", file=sys.stderr)
    print("stopping ...", flush=True)
    codes = await platform.stop()
    print("stopped: " + ", ".join(f"{n} exit {c}" for n, c in codes.items()))
    return 0 if stopper in done else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="parley-dev", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path(".parley"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("HTTP_PORT", "8080")))
    args = parser.parse_args()
    readme = Path("README.md")
    text = readme.read_text() if readme.exists() else None
    sys.exit(asyncio.run(run(args.data_dir.resolve(), args.port, text)))


if __name__ == "__main__":
    main()

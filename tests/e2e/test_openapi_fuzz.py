"""A property-based fuzz of the whole public OpenAPI against the running platform.

Schemathesis reads the gateway's OpenAPI (built in-process at collection, so each operation
is a test of its own; the first test checks the running gateway serves the same) and, for
every operation, sends
``MAX_EXAMPLES`` requests that Hypothesis generates from the schema (valid ones and ones that
break it), as a caller holding every scope. Each response must not be a 5xx, must match the
schema the API documents for its status (the error envelope included), must come with a
documented status and content type, and must carry the headers it documents. Loopback only:
the five services run as processes on 127.0.0.1, the model is the offline local provider.

Bounded for CI: a fixed example count and seed per operation, no shrinking (a failure is
reported as found, with the request that caused it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from parley_devstack import Platform
from parley_gateway.app import create_app
from parley_gateway.auth import SCOPES, issue_token
from parley_gateway.settings import Settings as GatewaySettings

pytestmark = [pytest.mark.e2e]

MAX_EXAMPLES = 50
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.ignored_auth,
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The platform, started on its own event loop for the module; the gateway's URL."""
    platform = Platform(
        data_dir=Path(tmp_path_factory.mktemp("fuzz")),
        env={"LOCAL_TOKEN_DELAY_MS": "0", "LOG_LEVEL": "WARNING"},
        # Limits have tests of their own; here they would only turn requests into 429s.
        per_service_env={"gateway": {"LIMITS_DEFAULT_TIER": "unlimited"}},
    )
    loop = asyncio.new_event_loop()
    loop.run_until_complete(platform.start())
    try:
        yield platform.gateway_url
    finally:
        codes = loop.run_until_complete(platform.stop())
        loop.close()
    assert all(code == 0 for code in codes.values()), codes


OPENAPI = create_app(GatewaySettings()).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_the_running_gateway_serves_the_schema_fuzzed(gateway: str) -> None:
    assert httpx.get(f"{gateway}/openapi.json").json() == OPENAPI


def _token() -> str:
    gateway = GatewaySettings()
    return issue_token(
        gateway.auth_secret, gateway.auth_issuer, tenant="fuzz", user="fuzzer", scopes=SCOPES
    )


FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize(
    "label", sorted(op.ok().label for op in schema.get_all_operations()), ids=str
)
def test_every_operation_answers_within_its_schema(gateway: str, label: str) -> None:
    operation = schema.find_operation_by_label(label)
    assert operation is not None
    headers = {"Authorization": f"Bearer {_token()}"}

    @FUZZ
    @given(case=operation.as_strategy())
    def requests_answered_within_the_schema(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=gateway, headers=headers, checks=CHECKS, timeout=30)

    requests_answered_within_the_schema()

"""Provider failures: what is retried and what the caller receives, by the runtime's one rule."""

from __future__ import annotations

import grpc
import pytest

from parley_llm_router.providers.failures import (
    REPORTED_AS,
    FailureKind,
    ProviderFailure,
    classify_status,
)
from parley_runtime.errors import is_retryable


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_busy_or_failing_providers_are_retried(status: int) -> None:
    failure = ProviderFailure(classify_status(status), "x", status=status)
    assert failure.retryable
    assert failure.error().status == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_rejected_keys_and_requests_are_never_retried(status: int) -> None:
    failure = ProviderFailure(classify_status(status), "x", status=status)
    assert not failure.retryable
    assert failure.error().status == grpc.StatusCode.FAILED_PRECONDITION


def test_every_kind_is_retryable_exactly_when_the_runtime_says_its_status_is() -> None:
    assert set(REPORTED_AS) == set(FailureKind)
    for kind, error in REPORTED_AS.items():
        failure = ProviderFailure(kind, "x", retry_after=2.0)
        reported = failure.error()
        assert isinstance(reported, error)
        assert failure.retryable == reported.retryable == is_retryable(error.status)
        assert (reported.code, reported.retry_after) == (kind.value, 2.0)

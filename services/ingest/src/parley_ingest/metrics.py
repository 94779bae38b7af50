"""Every Prometheus series of the ingest service."""

from __future__ import annotations

from prometheus_client import Counter

JOBS_FINISHED = Counter(
    "parley_ingest_jobs_total", "Ingest jobs finished, by outcome.", ["outcome"]
)
JOB_RETRIES = Counter(
    "parley_ingest_job_retries_total",
    "Ingest job attempts that failed for a passing reason and were queued again.",
)

"""Every Prometheus series of the ingest service (the runtime adds those of its gRPC server
and its database pool)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS_FINISHED = Counter(
    "parley_ingest_jobs_total", "Ingest jobs finished, by outcome.", ["outcome"]
)
JOB_RETRIES = Counter(
    "parley_ingest_job_retries_total",
    "Ingest job attempts that failed for a passing reason and were queued again.",
)
QUEUE_DEPTH = Gauge(
    "parley_ingest_queue_depth",
    "Jobs queued and not started, every replica's (sampled by each worker: take the max).",
)
JOB_LAG = Histogram(
    "parley_ingest_job_lag_seconds",
    "From a job's upload to the start of its first attempt.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
JOB_DURATION = Histogram(
    "parley_ingest_job_duration_seconds",
    "One attempt of a job, by outcome (succeeded, failed, retried).",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
# Exported from the start, at zero.
for _outcome in ("succeeded", "failed"):
    JOBS_FINISHED.labels(_outcome)
for _outcome in ("succeeded", "failed", "retried"):
    JOB_DURATION.labels(_outcome)

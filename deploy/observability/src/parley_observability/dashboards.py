"""The four dashboards: platform overview, LLM, RAG and ingest, SLOs.

Each is a function returning the SDK's builder; ``build.py`` numbers the panels and writes
the JSON. Queries follow the metric catalogue (``deploy/observability/README.md``).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as models

from parley_observability.panels import Query, datasource_variable, graph, label_variable, single
from parley_observability.promql import (
    AVAILABILITY_OBJECTIVE,
    CHAT_ROUTES,
    CONTAINERS,
    GRPC_SERVER_ERRORS,
    TTFT_OBJECTIVE,
    TTFT_THRESHOLD_SECONDS,
    or_zero,
    quantile,
    ratio_of,
)
from parley_observability.rules import AVAILABILITY_ERRORS, TTFT_SLOW

RATE = "$__rate_interval"
TTFT = "parley_gateway_time_to_first_token_seconds"


def _dashboard(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["parley"])
        .time("now-3h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .readonly()
        .link(
            dashboard.DashboardLink("Parley")
            .type(models.DashboardLinkType.DASHBOARDS)
            .tags(["parley"])
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
        )
        .with_variable(datasource_variable())
    )


def overview() -> dashboard.Dashboard:
    """Rate, errors and duration of every RPC and route; what saturates first."""
    grpc = 'parley_grpc_server_handled_total{job=~"$job"}'
    grpc_errors = f'parley_grpc_server_handled_total{{job=~"$job",code=~"{GRPC_SERVER_ERRORS}"}}'
    http = "parley_http_requests_total"
    return (
        _dashboard(
            "parley-overview",
            "Parley / Platform overview",
            "Requests, errors and latency of every gRPC method and HTTP route, per service; "
            "streams in flight, database pools, Redis and replicas.",
        )
        .with_variable(
            label_variable("job", "Service", "label_values(parley_grpc_server_handled_total, job)")
        )
        .with_variable(
            label_variable(
                "namespace",
                "Namespace",
                "label_values(kube_horizontalpodautoscaler_status_current_replicas, namespace)",
            )
        )
        .with_row(dashboard.Row("gRPC: conversation, llm-router, retrieval, ingest"))
        .with_panel(
            graph(
                "Requests by method",
                "RPCs completed per second, by service and method.",
                Query(f"sum by (job, method) (rate({grpc}[{RATE}]))", "{{job}} {{method}}"),
                unit="reqps",
            )
        )
        .with_panel(
            graph(
                "Server errors by method",
                f"Share of RPCs that ended with a server-side code ({GRPC_SERVER_ERRORS}).",
                Query(ratio_of(grpc_errors, grpc, by="job, method"), "{{job}} {{method}}"),
                unit="percentunit",
            )
        )
        .with_panel(
            graph(
                "Latency p99 by method",
                "99th percentile from receiving an RPC to its last message (a streamed turn "
                "lasts as long as its answer).",
                Query(
                    quantile(
                        0.99, "parley_grpc_server_handling_seconds", "job, method", 'job=~"$job"'
                    ),
                    "{{job}} {{method}}",
                ),
                unit="s",
                exemplars=True,
            )
        )
        .with_panel(
            graph(
                "Responses by code",
                "RPCs per second by service and gRPC status code.",
                Query(f"sum by (job, code) (rate({grpc}[{RATE}]))", "{{job}} {{code}}"),
                unit="reqps",
            )
        )
        .with_row(dashboard.Row("HTTP: gateway"))
        .with_panel(
            graph(
                "Requests by route and status",
                "HTTP requests per second by route template and status.",
                Query(f"sum by (route, status) (rate({http}[{RATE}]))", "{{route}} {{status}}"),
                unit="reqps",
            )
        )
        .with_panel(
            graph(
                "5xx by route",
                "Share of each route's requests answered with a 5xx.",
                Query(ratio_of(f'{http}{{status=~"5.."}}', http, by="route"), "{{route}}"),
                unit="percentunit",
            )
        )
        .with_panel(
            graph(
                "Latency p99 by route",
                "99th percentile from request to response headers.",
                Query(quantile(0.99, "parley_http_request_duration_seconds", "route"), "{{route}}"),
                unit="s",
                exemplars=True,
            )
        )
        .with_panel(
            graph(
                "Rate limit and quota decisions",
                "Limit checks per second by kind and outcome (refused: a 429).",
                Query(
                    f"sum by (kind, outcome) (rate(parley_gateway_limit_decisions_total[{RATE}]))",
                    "{{kind}} {{outcome}}",
                ),
                unit="reqps",
            )
        )
        .with_row(dashboard.Row("Saturation"))
        .with_panel(
            graph(
                "RPCs and streams in flight",
                "Calls being served per service: the per-pod autoscaling signal.",
                Query('sum by (job) (parley_grpc_server_in_flight{job=~"$job"})', "{{job}}"),
                Query(
                    "sum by (transport) (parley_gateway_streams_in_flight)",
                    "gateway {{transport}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Database pool",
                "Connections in use and idle per service, and the most the pool may open.",
                Query("sum by (job, state) (parley_db_pool_connections)", "{{job}} {{state}}"),
                Query("sum by (job) (parley_db_pool_limit)", "{{job}} limit"),
            )
        )
        .with_panel(
            graph(
                "Database pool wait p99",
                "Time to get a connection from the pool: it grows once the pool is exhausted.",
                Query(quantile(0.99, "parley_db_pool_wait_seconds", "job"), "{{job}}"),
                unit="s",
            )
        )
        .with_panel(
            graph(
                "Redis errors",
                "Redis calls that failed and were worked around (limits, cache, breakers).",
                Query(
                    f"sum by (job, component) (rate(parley_redis_errors_total[{RATE}]))",
                    "{{job}} {{component}}",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            graph(
                "Replicas (HPA)",
                "Current and maximum replicas of each HorizontalPodAutoscaler "
                "(kube-state-metrics).",
                Query(
                    "sum by (horizontalpodautoscaler) "
                    '(kube_horizontalpodautoscaler_status_current_replicas{namespace=~"$namespace"})',
                    "{{horizontalpodautoscaler}}",
                ),
                Query(
                    "sum by (horizontalpodautoscaler) "
                    '(kube_horizontalpodautoscaler_spec_max_replicas{namespace=~"$namespace"})',
                    "{{horizontalpodautoscaler}} max",
                ),
            )
        )
        .with_panel(
            graph(
                "Container restarts",
                "Restarts of Parley's containers over the last hour (kube-state-metrics).",
                Query(
                    "sum by (pod, container) (increase(kube_pod_container_status_restarts_total"
                    f'{{namespace=~"$namespace",{CONTAINERS}}}[1h]))',
                    "{{pod}} {{container}}",
                ),
            )
        )
    )


def llm() -> dashboard.Dashboard:
    """Time to first token, streaming speed, tokens and cost, and the router's resilience."""
    by_candidate = 'candidate=~"$candidate"'
    tenant_candidate = 'tenant=~"$tenant",candidate=~"$candidate"'
    return (
        _dashboard(
            "parley-llm",
            "Parley / LLM",
            "Time to first token (click an exemplar to open the turn's trace in Tempo), tokens "
            "per second, tokens and cost by tenant and model, fallbacks, retries, breakers "
            "and the response cache.",
        )
        .with_variable(
            label_variable(
                "candidate", "Provider/model", "label_values(parley_llm_requests_total, candidate)"
            )
        )
        .with_variable(
            label_variable("tenant", "Tenant", "label_values(parley_llm_tokens_total, tenant)")
        )
        .with_row(dashboard.Row("Time to first token"))
        .with_panel(
            graph(
                "Time to first token, as the client sees it",
                "From the request reaching the gateway to the first answer text sent back. The "
                "points are exemplars: each opens its turn's trace in Tempo.",
                Query(quantile(0.5, TTFT), "p50"),
                Query(quantile(0.9, TTFT), "p90"),
                Query(quantile(0.99, TTFT), "p99"),
                unit="s",
                exemplars=True,
                lines=((None, "green"), (TTFT_THRESHOLD_SECONDS, "red")),
            )
        )
        .with_panel(
            graph(
                "Provider time to first token p99",
                "From llm-router's call to the provider's first delta, per provider and model.",
                Query(
                    quantile(
                        0.99, "parley_llm_time_to_first_token_seconds", "candidate", by_candidate
                    ),
                    "{{candidate}}",
                ),
                unit="s",
                exemplars=True,
            )
        )
        .with_panel(
            graph(
                "Output tokens per second",
                "Median streaming speed after the first token, per provider and model.",
                Query(
                    quantile(0.5, "parley_llm_output_tokens_per_second", "candidate", by_candidate),
                    "{{candidate}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Conversation: first answer text p99",
                "From the stored user message to the first answer text, in conversation "
                "(history, retrieval, prompt and the router included).",
                Query(quantile(0.99, "parley_turn_first_delta_seconds"), "p99"),
                unit="s",
                exemplars=True,
            )
        )
        .with_row(dashboard.Row("Tokens and cost"))
        .with_panel(
            graph(
                "Cost per hour by tenant and model",
                "US dollars an hour at the current pace, from the routes' prices.",
                Query(
                    "3600 * sum by (tenant, candidate) "
                    f"(rate(parley_llm_cost_usd_total{{{tenant_candidate}}}[{RATE}]))",
                    "{{tenant}} {{candidate}}",
                ),
                unit="currencyUSD",
            )
        )
        .with_panel(
            single(
                "Cost over the time range by tenant",
                "US dollars spent in the dashboard's time range.",
                Query(
                    "sum by (tenant) "
                    f"(increase(parley_llm_cost_usd_total{{{tenant_candidate}}}[$__range]))",
                    "{{tenant}}",
                ),
                unit="currencyUSD",
            )
        )
        .with_panel(
            graph(
                "Tokens by tenant",
                "Tokens per second by tenant and direction (input, output).",
                Query(
                    "sum by (tenant, direction) "
                    f"(rate(parley_llm_tokens_total{{{tenant_candidate}}}[{RATE}]))",
                    "{{tenant}} {{direction}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Tokens by model",
                "Tokens per second by provider/model and direction.",
                Query(
                    "sum by (candidate, direction) "
                    f"(rate(parley_llm_tokens_total{{{tenant_candidate}}}[{RATE}]))",
                    "{{candidate}} {{direction}}",
                ),
            )
        )
        .with_row(dashboard.Row("Resilience and cache"))
        .with_panel(
            graph(
                "Provider attempts by outcome",
                "Calls to each provider and model per second, by how they ended.",
                Query(
                    "sum by (candidate, outcome) "
                    f"(rate(parley_llm_requests_total{{{by_candidate}}}[{RATE}]))",
                    "{{candidate}} {{outcome}}",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            graph(
                "Fallbacks and retries",
                "Moves to the next candidate per second (by model alias), and retries of the "
                "same candidate (by provider/model).",
                Query(
                    f"sum by (alias) (rate(parley_llm_fallbacks_total[{RATE}]))",
                    "fallback {{alias}}",
                ),
                Query(
                    "sum by (candidate) "
                    f"(rate(parley_llm_retries_total{{{by_candidate}}}[{RATE}]))",
                    "retry {{candidate}}",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            graph(
                "Breaker state",
                "Circuit breaker per provider/model: 0 closed, 1 half open (a probe), 2 open "
                "(calls go to the next candidate).",
                Query(
                    f"max by (candidate) (parley_llm_breaker_state{{{by_candidate}}})",
                    "{{candidate}}",
                ),
                lines=((None, "green"), (1, "orange"), (2, "red")),
            )
        )
        .with_panel(
            graph(
                "Response cache hit ratio",
                "Share of cacheable requests answered from the cache.",
                Query(
                    ratio_of('parley_llm_cache_total{result="hit"}', "parley_llm_cache_total"),
                    "hits",
                ),
                unit="percentunit",
            )
        )
        .with_panel(
            graph(
                "Provider calls in flight",
                "Calls open to each provider and model.",
                Query(
                    f"sum by (candidate) (parley_llm_in_flight{{{by_candidate}}})",
                    "{{candidate}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Turns by outcome",
                "Chat turns per second in conversation, by how they ended.",
                Query(f"sum by (outcome) (rate(parley_turns_total[{RATE}]))", "{{outcome}}"),
                unit="reqps",
            )
        )
    )


def rag() -> dashboard.Dashboard:
    """Retrieval latency and empty results; the ingest queue, its lag, throughput and failures."""
    jobs = "parley_ingest_jobs_total"
    searches = "parley_retrieval_searches_total"
    return (
        _dashboard(
            "parley-rag",
            "Parley / RAG and ingest",
            "Search latency and empty results, embedding time; ingest queue depth, job lag, "
            "throughput and failures.",
        )
        .with_row(dashboard.Row("Retrieval"))
        .with_panel(
            graph(
                "Search latency",
                "Search time by mode, the query's embedding included.",
                Query(quantile(0.5, "parley_retrieval_search_seconds", "mode"), "p50 {{mode}}"),
                Query(quantile(0.99, "parley_retrieval_search_seconds", "mode"), "p99 {{mode}}"),
                unit="s",
                exemplars=True,
            )
        )
        .with_panel(
            graph(
                "Empty results",
                "Share of searches that found no passage: the knowledge base lacks the answer, "
                "or the score threshold is too strict.",
                Query(ratio_of(f'{searches}{{result="empty"}}', searches, by="mode"), "{{mode}}"),
                unit="percentunit",
            )
        )
        .with_panel(
            graph(
                "Searches",
                "Searches per second by mode and result.",
                Query(f"sum by (mode, result) (rate({searches}[{RATE}]))", "{{mode}} {{result}}"),
                unit="reqps",
            )
        )
        .with_panel(
            graph(
                "Embedding time p99",
                "Time to embed a query, and a batch of documents' chunks.",
                Query(quantile(0.99, "parley_retrieval_embedding_seconds", "kind"), "{{kind}}"),
                unit="s",
                exemplars=True,
            )
        )
        .with_row(dashboard.Row("Ingest"))
        .with_panel(
            graph(
                "Queue depth",
                "Ingest jobs queued and not started.",
                Query("max(parley_ingest_queue_depth)", "queued"),
            )
        )
        .with_panel(
            graph(
                "Job lag",
                "From a job being queued to a worker starting it.",
                Query(quantile(0.5, "parley_ingest_job_lag_seconds"), "p50"),
                Query(quantile(0.99, "parley_ingest_job_lag_seconds"), "p99"),
                unit="s",
                exemplars=True,
            )
        )
        .with_panel(
            graph(
                "Throughput",
                "Jobs finished per second by outcome, and chunks embedded and stored.",
                Query(f"sum by (outcome) (rate({jobs}[{RATE}]))", "jobs {{outcome}}"),
                Query(
                    f"sum(rate(parley_retrieval_indexed_chunks_total[{RATE}]))", "chunks indexed"
                ),
            )
        )
        .with_panel(
            graph(
                "Failures",
                "Share of finished jobs that failed, and attempts retried after a passing "
                "failure (per second).",
                Query(ratio_of(f'{jobs}{{outcome="failed"}}', jobs), "failed share"),
                Query(f"sum(rate(parley_ingest_job_retries_total[{RATE}]))", "retries per second"),
            )
        )
        .with_panel(
            graph(
                "Job duration p99",
                "From a worker starting a job to its end, by outcome.",
                Query(
                    quantile(0.99, "parley_ingest_job_duration_seconds", "outcome"), "{{outcome}}"
                ),
                unit="s",
            )
        )
    )


def slo() -> dashboard.Dashboard:
    """The chat API's availability and time to first token against their objectives."""
    availability_budget = round(1 - AVAILABILITY_OBJECTIVE, 6)
    ttft_budget = round(1 - TTFT_OBJECTIVE, 6)
    chat = f'parley_http_requests_total{{route=~"{CHAT_ROUTES}"}}'
    refused = f'parley_http_requests_total{{route=~"{CHAT_ROUTES}",status=~"5.."}}'
    burn_lines = ((None, "green"), (6, "orange"), (14.4, "red"))
    return (
        _dashboard(
            "parley-slo",
            "Parley / SLOs",
            f"Chat API availability (objective {AVAILABILITY_OBJECTIVE:.1%}) and time to first "
            f"token ({TTFT_OBJECTIVE:.0%} of turns within {TTFT_THRESHOLD_SECONDS} s), their "
            "30-day error budgets and burn rates.",
        )
        .with_row(dashboard.Row("Availability of the chat API"))
        .with_panel(
            single(
                "Availability",
                "Share of turns that did not fail, and chat requests not refused with a 5xx, "
                "over the time range.",
                Query(f"1 - avg_over_time({AVAILABILITY_ERRORS}5m[$__range])"),
                unit="percentunit",
                steps=((None, "red"), (AVAILABILITY_OBJECTIVE, "green")),
            )
        )
        .with_panel(
            single(
                "Error budget left (30 days)",
                "What is left of the month's budget of failed turns.",
                Query(f"1 - avg_over_time({AVAILABILITY_ERRORS}5m[30d]) / {availability_budget}"),
                unit="percentunit",
                steps=((None, "red"), (0.25, "orange"), (0.5, "green")),
            )
        )
        .with_panel(
            graph(
                "Burn rate",
                "How many times faster than the budget allows turns fail. The alerts fire over "
                "14.4 (1 h and 5 min) and over 6 (6 h and 30 min).",
                *(
                    Query(f"{AVAILABILITY_ERRORS}{w} / {availability_budget}", w)
                    for w in ("5m", "1h", "6h")
                ),
                width=12,
                lines=burn_lines,
            )
        )
        .with_panel(
            graph(
                "Turns by outcome",
                "Turns per second at the gateway by how they ended, and chat requests refused "
                "with a 5xx before a turn began.",
                Query(
                    f"sum by (outcome) (rate(parley_gateway_turn_seconds_count[{RATE}]))",
                    "{{outcome}}",
                ),
                Query(
                    or_zero(f"sum(rate({refused}[{RATE}]))", f"sum(rate({chat}[{RATE}]))"),
                    "refused (5xx)",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            graph(
                "Turn duration",
                "From the request to the stream's end at the gateway, by outcome.",
                Query(quantile(0.5, "parley_gateway_turn_seconds", "outcome"), "p50 {{outcome}}"),
                Query(quantile(0.99, "parley_gateway_turn_seconds", "outcome"), "p99 {{outcome}}"),
                Query(
                    quantile(0.99, "parley_turn_duration_seconds", "outcome"),
                    "p99 in conversation {{outcome}}",
                ),
                unit="s",
                exemplars=True,
            )
        )
        .with_row(dashboard.Row("Time to first token"))
        .with_panel(
            single(
                f"Turns with first text within {TTFT_THRESHOLD_SECONDS} s",
                "Over the time range.",
                Query(f"1 - avg_over_time({TTFT_SLOW}5m[$__range])"),
                unit="percentunit",
                steps=((None, "red"), (TTFT_OBJECTIVE, "green")),
            )
        )
        .with_panel(
            single(
                "Error budget left (30 days)",
                f"What is left of the month's budget of turns slower than "
                f"{TTFT_THRESHOLD_SECONDS} s.",
                Query(f"1 - avg_over_time({TTFT_SLOW}5m[30d]) / {ttft_budget}"),
                unit="percentunit",
                steps=((None, "red"), (0.25, "orange"), (0.5, "green")),
            )
        )
        .with_panel(
            graph(
                "Time to first token p99",
                "From the request reaching the gateway to the first answer text. Each point is "
                "an exemplar: click it to open that turn's trace in Tempo.",
                Query(quantile(0.99, TTFT), "p99"),
                Query(quantile(0.5, TTFT), "p50"),
                unit="s",
                exemplars=True,
                lines=((None, "green"), (TTFT_THRESHOLD_SECONDS, "red")),
            )
        )
        .with_panel(
            graph(
                "Burn rate",
                f"How many times faster than the budget allows turns are slower than "
                f"{TTFT_THRESHOLD_SECONDS} s.",
                *(Query(f"{TTFT_SLOW}{w} / {ttft_budget}", w) for w in ("5m", "1h", "6h")),
                lines=burn_lines,
            )
        )
    )


DASHBOARDS = {
    "parley-overview": overview,
    "parley-llm": llm,
    "parley-rag": rag,
    "parley-slo": slo,
}

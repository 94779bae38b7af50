"""Recording rules for the SLIs and the alerts, each alert with the synthetic series that must
make it fire and those that must leave it silent (``promtool test rules`` runs both).

The SLO alerts follow the SRE workbook's multiple windows, multiple burn rates: a page when
the last hour burns 14.4 times the budget (2 % of a 30-day budget) and the last 5 minutes
still do, a warning when the last 6 hours burn 6 times (5 %) and the last 30 minutes still do.
Annotation templates use ``$labels`` only, so the expected text of a firing alert is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from parley_observability.promql import (
    AVAILABILITY_OBJECTIVE,
    CHAT_ROUTES,
    CONTAINERS,
    LLM_CALLS,
    TTFT_BUCKET,
    TTFT_OBJECTIVE,
    TTFT_THRESHOLD_SECONDS,
    or_zero,
)

# Where the runbooks are: the umbrella chart replaces it with observability.runbookBaseUrl.
RUNBOOK_BASE = "deploy/observability/README.md"
SLI_WINDOWS = ("5m", "30m", "1h", "6h")
INGEST_BACKLOG_JOBS = 100
FALLBACK_RATIO = 0.1

AVAILABILITY_ERRORS = "parley:chat_turn_errors:ratio_rate"
TTFT_SLOW = "parley:chat_ttft_slow:ratio_rate"
TTFT_P99 = "parley:chat_ttft:p99_rate5m"


@dataclass(frozen=True)
class Recording:
    record: str
    expr: str

    def rule(self) -> dict[str, object]:
        return {"record": self.record, "expr": self.expr}


@dataclass(frozen=True)
class Scenario:
    """Input series, one sample a minute in promtool's notation (``0+5x60``: from 0, up 5 a
    minute, 60 times), and the labels of each alert expected at ``at`` (none: silent)."""

    series: dict[str, str]
    at: str
    fires: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class Alert:
    """An alert; ``signals`` are the values its condition compares, which a platform in use
    must export (the loopback Prometheus test evaluates them)."""

    name: str
    expr: str
    signals: tuple[str, ...]
    duration: str
    severity: str
    summary: str
    description: str
    firing: Scenario
    healthy: Scenario

    @property
    def runbook_url(self) -> str:
        return f"{RUNBOOK_BASE}#{self.name.lower()}"

    def annotations(self) -> dict[str, str]:
        return {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": self.runbook_url,
        }

    def rule(self) -> dict[str, object]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.duration,
            "labels": {"severity": self.severity},
            "annotations": self.annotations(),
        }


@dataclass(frozen=True)
class Group:
    name: str
    rules: tuple[Recording | Alert, ...] = field(default_factory=tuple)
    interval: str = "30s"

    def document(self) -> dict[str, object]:
        return {
            "name": self.name,
            "interval": self.interval,
            "rules": [rule.rule() for rule in self.rules],
        }


def _availability(window: str) -> Recording:
    """Failed turns and chat requests refused with a 5xx, over turns and those refusals."""
    turns = f"sum(rate(parley_gateway_turn_seconds_count[{window}]))"
    failed = f'sum(rate(parley_gateway_turn_seconds_count{{outcome="failed"}}[{window}]))'
    refused = (
        f'sum(rate(parley_http_requests_total{{route=~"{CHAT_ROUTES}",status=~"5.."}}[{window}]))'
    )
    bad = f"({failed} or vector(0)) + ({refused} or vector(0))"
    total = f"({turns} or vector(0)) + ({refused} or vector(0))"
    return Recording(f"{AVAILABILITY_ERRORS}{window}", f"({bad})\n/\n({total})")


def _ttft_slow(window: str) -> Recording:
    histogram = "parley_gateway_time_to_first_token_seconds"
    fast = f"sum(rate({histogram}_bucket{{{TTFT_BUCKET}}}[{window}]))"
    return Recording(f"{TTFT_SLOW}{window}", f"1 - {fast} / sum(rate({histogram}_count[{window}]))")


def _burn(
    sli: str, objective: float, long: str, short: str, factor: float
) -> tuple[str, tuple[str, ...]]:
    budget = round(1 - objective, 6)
    expr = f"{sli}{long} > ({factor} * {budget})\nand\n{sli}{short} > ({factor} * {budget})"
    return expr, (f"{sli}{long}", f"{sli}{short}")


# Turns over two hours and seven hours, a given share of them failed.
def _turns(minutes: int, per_minute: int, failed_per_minute: int) -> dict[str, str]:
    route = "/v1/conversations/{conversation_id}/messages"
    ok = per_minute - failed_per_minute
    return {
        'parley_gateway_turn_seconds_count{outcome="complete"}': f"0+{ok}x{minutes}",
        'parley_gateway_turn_seconds_count{outcome="failed"}': f"0+{failed_per_minute}x{minutes}",
        f'parley_http_requests_total{{route="{route}",status="200"}}': f"0+{per_minute}x{minutes}",
    }


def _first_tokens(minutes: int, per_minute: int, slow_per_minute: int) -> dict[str, str]:
    histogram = "parley_gateway_time_to_first_token_seconds"
    fast = per_minute - slow_per_minute
    return {
        f'{histogram}_bucket{{le="{TTFT_THRESHOLD_SECONDS}.0"}}': f"0+{fast}x{minutes}",
        f'{histogram}_bucket{{le="+Inf"}}': f"0+{per_minute}x{minutes}",
        f"{histogram}_count": f"0+{per_minute}x{minutes}",
    }


def _slo_alerts() -> list[Alert]:
    alerts: list[Alert] = []
    what = {
        AVAILABILITY_ERRORS: (
            "ChatAvailability",
            AVAILABILITY_OBJECTIVE,
            "chat turns failing",
            "failed or refused with a 5xx",
            _turns,
        ),
        TTFT_SLOW: (
            "TimeToFirstToken",
            TTFT_OBJECTIVE,
            "first answer text slow",
            f"slower than {TTFT_THRESHOLD_SECONDS} s to their first answer text",
            _first_tokens,
        ),
    }
    for sli, (name, objective, short_says, bad_says, series) in what.items():
        budget_percent = f"{(1 - objective) * 100:g} %"
        fast_expr, fast_signals = _burn(sli, objective, "1h", "5m", 14.4)
        slow_expr, slow_signals = _burn(sli, objective, "6h", "30m", 6)
        # Fast: 20 % bad for two hours; healthy: 0.05 %. Slow: 1 % bad for seven hours (under
        # the fast threshold for availability, over the slow one); healthy: 0.05 %.
        fast_bad = 20 if sli == TTFT_SLOW else 2
        slow_bad = 10 if sli == TTFT_SLOW else 1
        alerts.append(
            Alert(
                name=f"Parley{name}FastBurn",
                expr=fast_expr,
                signals=fast_signals,
                duration="2m",
                severity="critical",
                summary=f"Parley: {short_says}, burning the 30-day error budget 14.4 times "
                "too fast",
                description=f"Over the last hour and the last 5 minutes, the share of turns "
                f"{bad_says} is over 14.4 times the budget ({budget_percent} of turns): at "
                "this pace the month's budget is gone in about two days.",
                firing=Scenario(series(120, 100, fast_bad), "90m", ({},)),
                healthy=Scenario(series(120, 2000, 1), "90m"),
            )
        )
        alerts.append(
            Alert(
                name=f"Parley{name}SlowBurn",
                expr=slow_expr,
                signals=slow_signals,
                duration="15m",
                severity="warning",
                summary=f"Parley: {short_says}, burning the 30-day error budget 6 times too fast",
                description=f"Over the last 6 hours and the last 30 minutes, the share of "
                f"turns {bad_says} is over 6 times the budget ({budget_percent} of turns): at "
                "this pace the month's budget is gone in five days.",
                firing=Scenario(series(420, 100, slow_bad), "400m", ({},)),
                healthy=Scenario(series(420, 2000, 1), "400m"),
            )
        )
    return alerts


def _platform_alerts() -> list[Alert]:
    breaker = "max by (candidate) (max_over_time(parley_llm_breaker_state[5m]))"
    candidate = "openai/gpt-4o-mini"
    fallbacks = "sum(rate(parley_llm_fallbacks_total[10m]))"
    calls = f'sum(rate(parley_grpc_server_handled_total{{method=~"{LLM_CALLS}"}}[10m]))'
    fallback_ratio = f"{or_zero(fallbacks, calls)} / {calls}"
    depth = "max(parley_ingest_queue_depth)"
    growth = "max(deriv(parley_ingest_queue_depth[30m]))"
    crashing = (
        "max by (namespace, pod, container) (max_over_time("
        f'kube_pod_container_status_waiting_reason{{reason="CrashLoopBackOff",{CONTAINERS}}}[5m]))'
    )
    pool = (
        'max by (job, instance) (parley_db_pool_connections{state="in_use"})\n'
        "/\nmax by (job, instance) (parley_db_pool_limit > 0)"
    )
    stream_chat = "/parley.llm_router.v1.LlmRouter/StreamChat"
    return [
        Alert(
            name="ParleyProviderBreakerOpen",
            expr=f"{breaker} == 2",
            signals=(breaker,),
            duration="5m",
            severity="warning",
            summary="Parley: the circuit breaker of {{ $labels.candidate }} keeps opening",
            description="llm-router's breaker for {{ $labels.candidate }} has been open in "
            "each of the last 5-minute windows for 5 minutes: the provider keeps failing, and "
            "its requests go to the next candidate of their route (or fail when it has none).",
            firing=Scenario(
                {f'parley_llm_breaker_state{{candidate="{candidate}",instance="a"}}': "2x20"},
                "15m",
                ({"candidate": candidate},),
            ),
            healthy=Scenario(
                {
                    f'parley_llm_breaker_state{{candidate="{candidate}",instance="a"}}': "0x20",
                    'parley_llm_breaker_state{candidate="claude/haiku",instance="a"}': "1x20",
                },
                "15m",
            ),
        ),
        Alert(
            name="ParleyLLMFallbackRateHigh",
            expr=f"{fallback_ratio} > {FALLBACK_RATIO}",
            signals=(fallback_ratio,),
            duration="10m",
            severity="warning",
            summary="Parley: over 10 % of model calls fall back to another candidate",
            description="For 10 minutes, more than one llm-router call in ten moved past its "
            "first candidate: answers still arrive, but slower and from other models, and at "
            "other prices.",
            firing=Scenario(
                {
                    'parley_llm_fallbacks_total{alias="default"}': "0+20x40",
                    f'parley_grpc_server_handled_total{{method="{stream_chat}",code="OK"}}': (
                        "0+100x40"
                    ),
                },
                "30m",
                ({},),
            ),
            healthy=Scenario(
                {
                    'parley_llm_fallbacks_total{alias="default"}': "0+1x40",
                    f'parley_grpc_server_handled_total{{method="{stream_chat}",code="OK"}}': (
                        "0+100x40"
                    ),
                },
                "30m",
            ),
        ),
        Alert(
            name="ParleyIngestBacklogGrowing",
            expr=f"{depth} > {INGEST_BACKLOG_JOBS}\nand\n{growth} > 0",
            signals=(depth, growth),
            duration="15m",
            severity="warning",
            summary="Parley: the ingest queue keeps growing",
            description=f"More than {INGEST_BACKLOG_JOBS} ingest jobs wait, and the queue has "
            "grown over the last 30 minutes for 15 minutes: uploads are coming in faster than "
            "the workers index them, and new documents take longer to become searchable.",
            firing=Scenario({"parley_ingest_queue_depth": "0+10x60"}, "50m", ({},)),
            # A long queue that does not grow is being worked through.
            healthy=Scenario({"parley_ingest_queue_depth": "500x60"}, "50m"),
        ),
        Alert(
            name="ParleyPodCrashLooping",
            expr=f"{crashing} >= 1",
            signals=(crashing,),
            duration="15m",
            severity="critical",
            summary="Parley: {{ $labels.container }} in {{ $labels.pod }} is crash-looping",
            description="The {{ $labels.container }} container of {{ $labels.pod }} (namespace "
            "{{ $labels.namespace }}) has been in CrashLoopBackOff for 15 minutes: it exits "
            "soon after each start.",
            firing=Scenario(
                {
                    'kube_pod_container_status_waiting_reason{namespace="parley",'
                    'pod="parley-gateway-7d9f",container="gateway",reason="CrashLoopBackOff"}': (
                        "1x30"
                    )
                },
                "25m",
                ({"namespace": "parley", "pod": "parley-gateway-7d9f", "container": "gateway"},),
            ),
            healthy=Scenario(
                {
                    'kube_pod_container_status_waiting_reason{namespace="parley",'
                    'pod="parley-gateway-7d9f",container="gateway",reason="CrashLoopBackOff"}': (
                        "0x30"
                    ),
                    # Not a Parley container.
                    'kube_pod_container_status_waiting_reason{namespace="parley",'
                    'pod="postgres-0",container="postgres",reason="CrashLoopBackOff"}': "1x30",
                },
                "25m",
            ),
        ),
        Alert(
            name="ParleyDatabasePoolExhausted",
            expr=f"{pool} >= 1",
            signals=(pool,),
            duration="5m",
            severity="warning",
            summary="Parley: {{ $labels.job }} on {{ $labels.instance }} has no free database "
            "connection",
            description="For 5 minutes every connection of the pool of {{ $labels.job }} "
            "({{ $labels.instance }}) has been in use: requests wait for a connection "
            "(parley_db_pool_wait_seconds) and then time out.",
            firing=Scenario(
                {
                    'parley_db_pool_connections{job="conversation",instance="a",state="in_use"}': (
                        "10x20"
                    ),
                    'parley_db_pool_connections{job="conversation",instance="a",state="idle"}': (
                        "0x20"
                    ),
                    'parley_db_pool_limit{job="conversation",instance="a"}': "10x20",
                },
                "15m",
                ({"job": "conversation", "instance": "a"},),
            ),
            healthy=Scenario(
                {
                    'parley_db_pool_connections{job="conversation",instance="a",state="in_use"}': (
                        "3x20"
                    ),
                    'parley_db_pool_limit{job="conversation",instance="a"}': "10x20",
                    # A pool without a limit (SQLite's) never counts as exhausted.
                    'parley_db_pool_connections{job="ingest",instance="b",state="in_use"}': "1x20",
                    'parley_db_pool_limit{job="ingest",instance="b"}': "0x20",
                },
                "15m",
            ),
        ),
    ]


RECORDINGS: tuple[Recording, ...] = (
    *(_availability(window) for window in SLI_WINDOWS),
    *(_ttft_slow(window) for window in SLI_WINDOWS),
    Recording(
        TTFT_P99,
        "histogram_quantile(0.99, sum by (le) "
        "(rate(parley_gateway_time_to_first_token_seconds_bucket[5m])))",
    ),
)
ALERTS: tuple[Alert, ...] = (*_slo_alerts(), *_platform_alerts())

GROUPS: tuple[Group, ...] = (
    Group("parley-slis", RECORDINGS),
    Group("parley-slo-alerts", tuple(a for a in ALERTS if "Burn" in a.name)),
    Group("parley-alerts", tuple(a for a in ALERTS if "Burn" not in a.name)),
)


def rules_file() -> dict[str, object]:
    """The rules as Prometheus's ``rule_files`` read them (and a PrometheusRule's spec)."""
    return {"groups": [group.document() for group in GROUPS]}


def prometheus_rule(name: str = "parley") -> dict[str, object]:
    """The same rules as the Prometheus operator's custom resource."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "parley"}},
        "spec": rules_file(),
    }


_LABEL = re.compile(r"\{\{ \$labels\.(\w+) \}\}")


def rendered(template: str, labels: dict[str, str]) -> str:
    """An annotation as Prometheus renders it for an alert with these labels."""
    return _LABEL.sub(lambda m: labels.get(m.group(1), ""), template)


def unit_tests(alert: Alert, rule_file: str) -> dict[str, object]:
    """``promtool test rules`` input: ``alert`` fires on its firing series, not on its
    healthy ones."""

    def case(scenario: Scenario) -> dict[str, object]:
        expected = [
            {
                "exp_labels": {"severity": alert.severity, **labels},
                "exp_annotations": {
                    key: rendered(value, labels) for key, value in alert.annotations().items()
                },
            }
            for labels in scenario.fires
        ]
        return {
            "interval": "1m",
            "input_series": [
                {"series": series, "values": values} for series, values in scenario.series.items()
            ],
            "alert_rule_test": [
                {"eval_time": scenario.at, "alertname": alert.name, "exp_alerts": expected}
            ],
        }

    return {
        "rule_files": [rule_file],
        "evaluation_interval": "1m",
        "tests": [case(alert.firing), case(alert.healthy)],
    }

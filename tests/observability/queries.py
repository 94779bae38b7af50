"""Every PromQL expression an operator's tools evaluate, read from the built files: each
dashboard panel's targets and variables, each recording rule, each alert (and the signals
its condition compares, from the rules' source)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from parley_observability.promql import metric_names, on_kubernetes_only
from parley_observability.rules import ALERTS

__all__ = [
    "ALERTS",
    "DASHBOARDS",
    "OBSERVABILITY",
    "REPO",
    "RULES",
    "Expression",
    "all_expressions",
    "dashboard",
    "dashboard_expressions",
    "metric_names",
    "names_read",
    "panels_of",
]

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "deploy" / "observability"
DASHBOARDS = OBSERVABILITY / "grafana" / "dashboards"
RULES = OBSERVABILITY / "prometheus" / "parley-rules.yaml"


# What Grafana puts in place of its variables when the test evaluates a panel's query: every
# value of a multi-value variable ("All"), a range of a few minutes.
VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$job": ".*",
    "$namespace": ".*",
    "$candidate": ".*",
    "$tenant": ".*",
}


@dataclass(frozen=True)
class Expression:
    where: str
    expr: str
    # Whether a platform in use must give it series (an alert's full condition need not).
    must_return_series: bool = True

    @property
    def kubernetes_only(self) -> bool:
        return on_kubernetes_only(self.expr)


def substituted(expr: str) -> str:
    for name, value in sorted(VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(name, value)
    return expr


def panels_of(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel, those inside rows included."""
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(panels_of(panel.get("panels", [])))
    return found


def dashboard(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def dashboard_expressions() -> list[Expression]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        document = dashboard(path)
        for panel in panels_of(document["panels"]):
            for target in panel.get("targets", []):
                where = f"{path.stem}: {panel['title']} ({target['refId']})"
                found.append(Expression(where, substituted(target["expr"])))
        for variable in document["templating"]["list"]:
            if variable["type"] == "query":
                # label_values(metric, label) is Grafana's: Prometheus is asked for the metric.
                query = variable["query"]
                metric = query.removeprefix("label_values(").split(",")[0].strip()
                found.append(Expression(f"{path.stem}: variable {variable['name']}", metric))
    return found


def rule_expressions() -> list[Expression]:
    found = []
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                found.append(Expression(f"record {rule['record']}", rule["expr"]))
            else:
                found.append(Expression(f"alert {rule['alert']}", rule["expr"], False))
    for alert in ALERTS:
        for index, signal in enumerate(alert.signals):
            found.append(Expression(f"alert {alert.name}: signal {index}", signal))
    return found


def all_expressions() -> list[Expression]:
    return dashboard_expressions() + rule_expressions()


def names_read() -> set[str]:
    """Every metric name any expression reads."""
    return set().union(*(metric_names(e.expr) for e in all_expressions()))

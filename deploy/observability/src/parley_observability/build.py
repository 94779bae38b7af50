"""Every file built from this package, by path from the repository's root.

The dashboards and rules are written twice: under ``deploy/observability`` for an operator
who installs them by hand, and into the umbrella chart (``deploy/helm/parley/files``), whose
templates wrap them in ConfigMaps and a PrometheusRule.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from parley_observability.dashboards import DASHBOARDS
from parley_observability.rules import ALERTS, prometheus_rule, rules_file, unit_tests

OBSERVABILITY = PurePosixPath("deploy/observability")
CHART_FILES = PurePosixPath("deploy/helm/parley/files")
RULES = OBSERVABILITY / "prometheus" / "parley-rules.yaml"
HEADER = "# Built by scripts/observability.py from deploy/observability/src: do not edit.\n"


class _Dumper(yaml.SafeDumper):
    """Block scalars for multi-line expressions, so PromQL reads as written."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def to_yaml(document: object) -> str:
    return HEADER + yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True
    )


def _numbered(panels: list[dict[str, Any]], next_id: int = 1) -> int:
    """Give every panel (rows' panels included) a distinct id, in order."""
    for panel in panels:
        panel["id"] = next_id
        next_id = _numbered(panel.get("panels", []), next_id + 1)
    return next_id


def dashboard_json(uid: str) -> str:
    document: dict[str, Any] = json.loads(json.dumps(DASHBOARDS[uid]().build(), cls=JSONEncoder))
    _numbered(document["panels"])
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def outputs() -> dict[PurePosixPath, str]:
    """Each generated file's path and content."""
    files: dict[PurePosixPath, str] = {}
    for uid in DASHBOARDS:
        text = dashboard_json(uid)
        files[OBSERVABILITY / "grafana" / "dashboards" / f"{uid}.json"] = text
        files[CHART_FILES / "dashboards" / f"{uid}.json"] = text
    rules = to_yaml(rules_file())
    files[RULES] = rules
    files[CHART_FILES / "prometheus-rules.yaml"] = rules
    files[OBSERVABILITY / "prometheus" / "parley-prometheusrule.yaml"] = to_yaml(prometheus_rule())
    for alert in ALERTS:
        relative = "../prometheus/parley-rules.yaml"
        files[OBSERVABILITY / "tests" / f"{alert.name}.yaml"] = to_yaml(unit_tests(alert, relative))
    return files

"""The umbrella chart's dashboards and rules: the built files of deploy/observability, wrapped
in ConfigMaps for Grafana's sidecar and a PrometheusRule, behind values that are off by
default; and the ServiceMonitors that feed them."""

from __future__ import annotations

import json

import yaml

from .charts_render import REPO, SERVICES, production_values, render

OBSERVABILITY = REPO / "deploy" / "observability"


def test_dashboards_and_rules_are_off_by_default() -> None:
    rendered = render("parley")
    assert rendered.kind("PrometheusRule") == []
    assert [c for c in rendered.kind("ConfigMap") if "dashboard" in c["metadata"]["name"]] == []


def test_each_dashboard_is_a_configmap_for_grafanas_sidecar() -> None:
    rendered = render("parley", {"observability": {"dashboards": {"enabled": True}}})
    maps = {
        item["metadata"]["name"]: item
        for item in rendered.kind("ConfigMap")
        if item["metadata"]["labels"].get("app.kubernetes.io/name") == "dashboards"
    }
    built = sorted((OBSERVABILITY / "grafana" / "dashboards").glob("*.json"))
    assert sorted(maps) == [
        f"parley-dashboard-{path.stem.removeprefix('parley-')}" for path in built
    ]
    for path in built:
        item = maps[f"parley-dashboard-{path.stem.removeprefix('parley-')}"]
        assert item["metadata"]["labels"]["grafana_dashboard"] == "1"
        # The JSON arrives byte for byte, so Grafana loads what the generator built.
        assert item["data"] == {path.name: path.read_text()}
        assert json.loads(item["data"][path.name])["uid"] == path.stem


def test_the_prometheus_rule_holds_the_built_rules_with_the_runbook_address() -> None:
    rendered = render("parley", production_values("parley"))
    (rule,) = rendered.kind("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    built = yaml.safe_load((OBSERVABILITY / "prometheus" / "parley-rules.yaml").read_text())
    base = production_values("parley")["observability"]["runbookBaseUrl"]
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]
    assert alerts
    for alert in alerts:
        assert alert["annotations"]["runbook_url"] == f"{base}#{alert['alert'].lower()}"
    # Apart from the runbook address, the very rules promtool tested.
    for group in built["groups"]:
        for rule_ in group["rules"]:
            if "alert" in rule_:
                rule_["annotations"]["runbook_url"] = f"{base}#{rule_['alert'].lower()}"
    assert rule["spec"] == built


def test_without_a_runbook_address_the_rules_keep_the_repository_path() -> None:
    rendered = render("parley", {"observability": {"prometheusRule": {"enabled": True}}})
    (rule,) = rendered.kind("PrometheusRule")
    urls = {
        r["annotations"]["runbook_url"]
        for group in rule["spec"]["groups"]
        for r in group["rules"]
        if "alert" in r
    }
    assert urls
    assert all(u.startswith("deploy/observability/README.md#") for u in urls)


def test_service_monitors_name_the_job_after_the_service() -> None:
    rendered = render("parley", production_values("parley"))
    monitors = rendered.kind("ServiceMonitor")
    assert len(monitors) == len(SERVICES)
    for monitor in monitors:
        assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
        # No format forced: Prometheus negotiates OpenMetrics, which carries exemplars.
        assert "params" not in endpoint
        service = next(
            s
            for s in rendered.kind("Service")
            if s["metadata"]["name"] == monitor["metadata"]["name"]
        )
        assert service["metadata"]["labels"]["app.kubernetes.io/name"] in SERVICES

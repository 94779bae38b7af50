"""The built dashboards and rules match their source, and the hand-written configuration
(collector, Grafana provisioning) holds together: every component a pipeline names is
defined, every datasource a link names exists, every alert has its runbook."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import yaml

from .queries import (
    ALERTS,
    DASHBOARDS,
    OBSERVABILITY,
    REPO,
    RULES,
    dashboard,
    dashboard_expressions,
    panels_of,
)

PROVISIONING = OBSERVABILITY / "grafana" / "provisioning"


def test_built_files_are_up_to_date() -> None:
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "observability.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_dashboards_are_the_four_with_distinctpanels_of() -> None:
    uids = sorted(path.stem for path in DASHBOARDS.glob("*.json"))
    assert uids == ["parley-llm", "parley-overview", "parley-rag", "parley-slo"]
    for path in DASHBOARDS.glob("*.json"):
        document = dashboard(path)
        panels = panels_of(document["panels"])
        ids = [panel["id"] for panel in panels]
        assert len(ids) == len(set(ids)), path.name
        for panel in panels:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], (path.name, panel["title"])
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert len(set(ref_ids)) == len(ref_ids)
            assert all(ref_ids)


def test_time_to_first_token_panels_show_exemplars() -> None:
    ttft = [
        (path.stem, panel["title"], target)
        for path in DASHBOARDS.glob("*.json")
        for panel in panels_of(dashboard(path)["panels"])
        for target in panel.get("targets", [])
        if "time_to_first_token_seconds_bucket" in target["expr"]
    ]
    assert {dashboard_ for dashboard_, _, _ in ttft} >= {"parley-llm", "parley-slo"}
    assert all(target["exemplar"] for _, _, target in ttft), ttft


def test_every_dashboard_query_names_its_metrics() -> None:
    expressions = dashboard_expressions()
    assert len(expressions) > 60
    assert all(re.search(r"parley_|parley:|kube_", e.expr) for e in expressions), [
        e for e in expressions if not re.search(r"parley_|parley:|kube_", e.expr)
    ]


def _collector() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((OBSERVABILITY / "otel-collector.yaml").read_text())
    return loaded


def test_collector_pipelines_name_only_defined_components() -> None:
    config = _collector()
    connectors = set(config["connectors"])
    pipelines = config["service"]["pipelines"]
    for name, pipeline in pipelines.items():
        for receiver in pipeline["receivers"]:
            assert receiver in set(config["receivers"]) | connectors, (name, receiver)
        for processor in pipeline.get("processors", []):
            assert processor in config["processors"], (name, processor)
        for exporter in pipeline["exporters"]:
            assert exporter in set(config["exporters"]) | connectors, (name, exporter)
        # The memory limiter comes first wherever data enters from outside.
        if "otlp" in pipeline["receivers"]:
            assert pipeline["processors"][0] == "memory_limiter"
    # Each connector is used at both ends, and every component defined is used.
    for connector in connectors:
        assert any(connector in p["exporters"] for p in pipelines.values()), connector
        assert any(connector in p["receivers"] for p in pipelines.values()), connector
    used = {c for p in pipelines.values() for key in p.values() for c in key}
    defined = {*config["receivers"], *config["processors"], *config["exporters"], *connectors}
    assert defined <= used, defined - used
    assert set(config["service"]["extensions"]) == set(config["extensions"])


def test_collector_takes_otlp_and_samples_errors_and_slow_traces() -> None:
    config = _collector()
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    policies = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["latency"]["latency"]["threshold_ms"] > 0
    assert 0 < policies["probabilistic"]["probabilistic"]["sampling_percentage"] < 100
    # Sampled traces go to Tempo, after the sampler, in batches.
    pipelines = config["service"]["pipelines"].values()
    to_tempo = [p for p in pipelines if "otlp/tempo" in p["exporters"]]
    assert [p["processors"] for p in to_tempo] == [["tail_sampling", "batch"]]


def test_datasources_link_metrics_traces_and_logs() -> None:
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "parley.yaml").read_text())
    sources = {source["uid"]: source for source in provisioned["datasources"]}
    assert {sources[uid]["type"] for uid in sources} == {"prometheus", "tempo", "loki"}
    prometheus = next(s for s in sources.values() if s["type"] == "prometheus")
    tempo = next(s for s in sources.values() if s["type"] == "tempo")
    loki = next(s for s in sources.values() if s["type"] == "loki")
    # Exemplars' trace_id opens Tempo; Tempo links to Loki and Prometheus; Loki back to Tempo.
    (exemplars,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert (exemplars["name"], exemplars["datasourceUid"]) == ("trace_id", tempo["uid"])
    assert tempo["jsonData"]["tracesToLogsV2"]["datasourceUid"] == loki["uid"]
    assert tempo["jsonData"]["tracesToMetrics"]["datasourceUid"] == prometheus["uid"]
    assert tempo["jsonData"]["serviceMap"]["datasourceUid"] == prometheus["uid"]
    (derived,) = loki["jsonData"]["derivedFields"]
    assert derived["datasourceUid"] == tempo["uid"]
    line = '{"level": "INFO", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "msg": "turn"}'
    assert re.search(derived["matcherRegex"], line)
    # Grafana expands $NAME in provisioning files: its own variables are written $$.
    text = (PROVISIONING / "datasources" / "parley.yaml").read_text()
    assert not re.search(r"(?<!\$)\$(\{__|__)", text)


def test_every_alert_has_a_runbook_section() -> None:
    readme = (OBSERVABILITY / "README.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in readme.splitlines()
        if line.startswith("#")
    }
    rules = yaml.safe_load(RULES.read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    assert {a["alert"] for a in alerts} == {a.name for a in ALERTS}
    for alert in alerts:
        annotations = alert["annotations"]
        assert annotations["summary"]
        assert annotations["description"]
        anchor = annotations["runbook_url"].split("#", 1)[1]
        assert anchor in headings, f"no section #{anchor} in deploy/observability/README.md"


def test_alert_signals_are_what_their_conditions_compare() -> None:
    for alert in ALERTS:
        assert alert.signals
        assert all(signal in alert.expr for signal in alert.signals), alert.name

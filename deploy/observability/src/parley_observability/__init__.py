"""Parley's dashboards, recording rules and alerts, written as code.

``scripts/observability.py`` builds them into ``deploy/observability`` and the umbrella chart;
``deploy/observability/README.md`` says what each one shows and what to do when an alert fires.

- ``promql.py``: the names the queries share: the metric catalogue's selectors, the SLOs, the
  Kubernetes metrics that only exist in a cluster;
- ``rules.py``: recording rules and alerts (one source for the rules file and the
  ``PrometheusRule``);
- ``panels.py``: the few panel shapes the dashboards use, built with grafana-foundation-sdk;
- ``dashboards.py``: the four dashboards;
- ``build.py``: every generated file and its content.
"""

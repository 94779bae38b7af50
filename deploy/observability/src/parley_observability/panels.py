"""The panel shapes Parley's dashboards use, built with grafana-foundation-sdk.

Every panel reads the Prometheus datasource chosen in the dashboard's ``datasource``
variable. Latency panels ask for exemplars: Grafana draws each as a point on the graph, and
the Prometheus datasource's ``exemplarTraceIdDestinations`` (provisioning/datasources) turns
its ``trace_id`` into a link to the trace in Tempo.
"""

from __future__ import annotations

from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog import builder, variants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models

PROMETHEUS = models.DataSourceRef(type_val="prometheus", uid="${datasource}")


@dataclass(frozen=True)
class Query:
    """One PromQL expression and how its series are named in the legend."""

    expr: str
    legend: str = ""


def _targets(
    queries: tuple[Query, ...], exemplars: bool
) -> list[builder.Builder[variants.Dataquery]]:
    return [
        prometheus.Dataquery()
        .expr(query.expr)
        .legend_format(query.legend or "__auto")
        .ref_id(chr(ord("A") + index))
        .exemplar(exemplars)
        .range()
        for index, query in enumerate(queries)
    ]


def _thresholds(steps: tuple[tuple[float | None, str], ...]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=value, color=color) for value, color in steps])
    )


def graph(
    title: str,
    description: str,
    *queries: Query,
    unit: str = "short",
    exemplars: bool = False,
    width: int = 12,
    lines: tuple[tuple[float | None, str], ...] = (),
) -> timeseries.Panel:
    """A time series panel; ``lines`` draws thresholds (``None`` is the base colour)."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max"])
        )
        .targets(_targets(queries, exemplars))
    )
    if lines:
        panel = panel.thresholds(_thresholds(lines)).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
        )
    return panel


def single(
    title: str,
    description: str,
    query: Query,
    *,
    unit: str = "short",
    width: int = 6,
    steps: tuple[tuple[float | None, str], ...] = ((None, "green"),),
) -> stat.Panel:
    """One number (the last value), coloured by ``steps``."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .span(width)
        .height(5)
        .thresholds(_thresholds(steps))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .targets(_targets((query,), exemplars=False))
    )


def datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def label_variable(name: str, label: str, query: str) -> dashboard.QueryVariable:
    """A multi-value variable of a label's values (``All`` matches every value)."""
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query(query)
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )

"""Every chart lints, renders with its defaults and with production values, and every object
it renders is valid for the oldest and the newest Kubernetes the charts support; every
values.schema.json refuses what it should."""

from __future__ import annotations

import subprocess
import sys

import helm_python as helm
import pytest
import yaml
from kubernetes_validate import utils as kubernetes  # type: ignore[import-untyped]

from .charts_render import (
    CHARTS,
    CUSTOM_KINDS,
    HELM,
    SERVICES,
    built_charts,
    production_values,
    render,
    service_of,
)

# The charts' kubeVersion is >=1.29; 1.37 is the newest kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29", "1.37")
VALUE_SETS = ("default", "production")


def values_of(chart: str, value_set: str) -> dict[str, object] | None:
    return production_values(chart) if value_set == "production" else None


def test_dependencies_build_offline_from_the_lock_files() -> None:
    # built_charts() ran `helm dependency build`, which refuses a Chart.lock out of step with
    # Chart.yaml; each file:// dependency is now packaged where Helm looks for it.
    root = built_charts()
    for service in SERVICES:
        assert [p.name for p in (root / service / "charts").iterdir()] == ["parley-lib-0.1.0.tgz"]
    packaged = sorted(p.name for p in (root / "parley" / "charts").iterdir())
    assert packaged == sorted(f"{service}-0.1.0.tgz" for service in SERVICES)


@pytest.mark.parametrize("chart", CHARTS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_chart_lints_without_warnings(chart: str, value_set: str) -> None:
    for version in KUBERNETES_VERSIONS:
        report = helm.lint(
            built_charts() / chart,
            values_of(chart, value_set),
            strict=True,
            namespace="parley",
            kube_version=f"v{version}.0",
        )
        # Severity 1 is information ("icon is recommended"); 2 and above are findings.
        findings = [message for message in report["messages"] if message["severity"] >= 2]
        assert not findings, (version, findings)
        assert not report["errors"], (version, report["errors"])


def test_library_chart_lints() -> None:
    report = helm.lint(HELM / "parley-lib", strict=True)
    assert not [message for message in report["messages"] if message["severity"] >= 2]
    assert not report["errors"]


@pytest.mark.parametrize("chart", CHARTS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_is_valid_kubernetes(chart: str, value_set: str) -> None:
    rendered = render(chart, values_of(chart, value_set))
    assert len(rendered.kind("Deployment")) == (5 if chart == "parley" else 1)
    for item in rendered:
        if (item["apiVersion"], item["kind"]) in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes.validate(item, version, strict=True)
            except kubernetes.ValidationError as error:
                name = f"{item['kind']}/{item['metadata']['name']}"
                pytest.fail(f"{name} on Kubernetes {version}: {error.message} at {error.path}")


def test_custom_resources_are_the_known_ones() -> None:
    # kubernetes-validate only warns on kinds it has no schema for: a misspelt kind or
    # apiVersion must not slip through as a "custom resource".
    rendered = render("parley", production_values("parley"))
    assert {(item["apiVersion"], item["kind"]) for item in rendered} >= CUSTOM_KINDS
    removed = {"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler"}
    with pytest.raises(kubernetes.SchemaNotFoundError):
        kubernetes.validate(removed, "1.29")


def test_umbrella_installs_the_five_services_and_leaves_out_a_disabled_one() -> None:
    assert {service_of(item) for item in render("parley")} == set(SERVICES)
    without_router = render("parley", {"llm-router": {"enabled": False}})
    assert "llm-router" not in {service_of(item) for item in without_router}
    assert len(without_router.kind("Deployment")) == 4


@pytest.mark.parametrize(
    ("chart", "values", "refused"),
    [
        ("gateway", {"replicaCont": 3}, "replicaCont"),
        ("conversation", {"autoscaling": {"minReplica": 1}}, "minReplica"),
        ("llm-router", {"networkPolicy": {"provider": {}}}, "provider"),
        ("retrieval", {"image": {"tga": "1.0"}}, "tga"),
        ("ingest", {"migrations": {"enable": False}}, "enable"),
        ("parley", {"globl": {}}, "globl"),
        ("parley", {"global": {"networkPolicy": {"databse": {}}}}, "databse"),
        ("parley", {"gateway": {"ingres": {"enabled": True}}}, "ingres"),
        ("gateway", {"logLevel": "VERBOSE"}, "logLevel"),
        ("conversation", {"ingress": {"enabled": True}}, "ingress"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_schema_refuses_a_typo(chart: str, values: dict[str, object], refused: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=refused):
        render(chart, values)


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize(
    "config",
    [
        {"DATABASE_URL": "postgresql://parley:hunter2@db:5432/parley"},
        {"AUTH_SECRET": "an-hmac-key-of-thirty-two-characters"},
        {"OPENAI_API_KEY": "sk-live-0123456789"},
        {"AZURE_OPENAI_API_KEY": "0123456789abcdef"},
        {"PG_DSN": "postgresql://parley:hunter2@db:5432/parley"},
        {"GRPC_PORT": "1"},
    ],
    ids=["database-url", "auth-secret", "provider-key", "any-key", "password-in-url", "managed"],
)
def test_schema_keeps_secrets_and_managed_settings_out_of_config(
    service: str, config: dict[str, str]
) -> None:
    (key,) = config
    with pytest.raises(helm.HelmValuesError, match=key):
        render(service, {"config": config})


def test_schemas_are_generated_from_their_description() -> None:
    check = subprocess.run(
        [sys.executable, str(HELM / "values_schema.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_global_defaults_are_the_same_in_every_chart() -> None:
    # A service chart installed alone must behave as it does under the umbrella.
    defaults = {
        chart: yaml.safe_load((HELM / chart / "values.yaml").read_text())["global"]
        for chart in CHARTS
    }
    assert all(value == defaults["parley"] for value in defaults.values()), defaults

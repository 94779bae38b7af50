"""The Helm charts of deploy/helm, built and rendered offline by Helm's own engine.

The charts are copied to a temporary folder and their file:// dependencies built there, as an
operator's `helm dependency build` would (service charts first, then the umbrella, which
packages them), so the working tree is never written. Renders are cached: each distinct set
of values is rendered once per session.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / "deploy" / "helm"
SERVICES = ("gateway", "conversation", "llm-router", "retrieval", "ingest")
CHARTS = (*SERVICES, "parley")
GRPC_PORTS = {"conversation": 50061, "llm-router": 50062, "retrieval": 50063, "ingest": 50064}
WITH_DATABASE = ("gateway", "conversation", "llm-router", "ingest")
NAMESPACE = "parley"
# Kinds of custom resources, which kubernetes-validate has no schema for.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}

Values = dict[str, Any]
Manifest = dict[str, Any]


@functools.cache
def scratch() -> Path:
    """A folder of this session, removed when it ends."""
    folder = tempfile.TemporaryDirectory(prefix="parley-charts-")
    _kept.append(folder)
    return Path(folder.name)


_kept: list[tempfile.TemporaryDirectory[str]] = []


@functools.cache
def built_charts() -> Path:
    """A copy of deploy/helm with every chart's dependencies built from the lock files."""
    root = scratch() / "helm"
    shutil.copytree(HELM, root, ignore=shutil.ignore_patterns("charts", "__pycache__"))
    for chart in CHARTS:  # the umbrella last: it packages the service charts as built
        helm.dependency_build(root / chart)
    return root


def production_values(chart: str) -> Values:
    """deploy/helm/ci/production-values.yaml as the given chart takes it."""
    umbrella: Values = yaml.safe_load((HELM / "ci" / "production-values.yaml").read_text())
    if chart == "parley":
        return umbrella
    return {"global": umbrella["global"], **umbrella.get(chart, {})}


def merged(base: Values, override: Values) -> Values:
    """``base`` with ``override`` laid over it, maps merged key by key (as Helm merges -f)."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


@dataclass(frozen=True)
class Rendered:
    """A chart's objects as `helm template` would print them, hooks included."""

    objects: tuple[Manifest, ...]

    def __iter__(self) -> Iterator[Manifest]:
        return iter(self.objects)

    def kind(self, kind: str) -> list[Manifest]:
        return [item for item in self.objects if item["kind"] == kind]

    def get(self, kind: str, name: str) -> Manifest:
        found = [item for item in self.kind(kind) if item["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} named {name}"
        return found[0]

    def of_service(self, service: str) -> list[Manifest]:
        return [item for item in self.objects if service_of(item) == service]


def service_of(item: Manifest) -> str:
    return str(item["metadata"]["labels"]["app.kubernetes.io/name"])


def render(chart: str, values: Values | None = None, *, release: str = "parley") -> Rendered:
    """Render a chart offline (raises helm.HelmValuesError when the schema refuses values)."""
    return _render(chart, json.dumps(values, sort_keys=True), release)


@functools.cache
def _render(chart: str, values_json: str, release: str) -> Rendered:
    values = json.loads(values_json)
    with helm.Chart.load(built_charts() / chart) as loaded:
        files = loaded.render(values, name=release, namespace=NAMESPACE, is_install=True)
    objects: list[Manifest] = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(item for item in yaml.safe_load_all(text) if item)
    return Rendered(tuple(objects))


def uv() -> str:
    """The uv binary: $UV, else the one on PATH, else the repository's own."""
    return os.environ.get("UV") or shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")

"""deploy/terraform checked without a cloud, part two: the values the parley module hands each
chart. Its templates are filled as templatefile() does and rendered by the charts (Helm's
engine, their values.schema.json); its locals are evaluated by `terraform console` with
stand-ins for what it reads from AWS, and must give exactly those values."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .charts_render import SERVICES, Rendered, merged, render
from .test_terraform import MODULES, TERRAFORM_BIN, console, typed_blocks

PARLEY = MODULES / "parley"
PLACEHOLDER = re.compile(r"(?<!\$)\$\{([^}]*)\}")

# What the module's locals produce for staging-like inputs, as the JSON templatefile receives.
SAMPLE_COMMON: dict[str, Any] = {
    "image_registry": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/parley",
    "image_tag": "1.4.2",
    "otel_endpoint": "http://otel-collector.monitoring.svc.cluster.local:4317",
    "service_monitors": True,
    "metrics_scrapers": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ],
    "collector_peers": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ],
    "store_peers": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
    "qdrant_peers": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "qdrant"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "qdrant"}},
        }
    ],
    "qdrant_ports": [6333, 6334],
}
QDRANT_URL = "http://qdrant.qdrant.svc.cluster.local:6333"
CHECKSUM = "5" * 64
SAMPLE_OWN: dict[str, dict[str, Any]] = {
    "gateway": {
        "ingress": {
            "enabled": True,
            "host": "parley.example.com",
            "className": "nginx",
            "tlsSecretName": "parley-gateway-tls",
            "annotations": {},
        },
        "ingress_from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
        ],
    },
    "llm-router": {
        "routes": {
            "providers": {"openai": {"type": "openai", "api_key_env": "OPENAI_API_KEY"}},
            "models": {"default": {"candidates": [{"provider": "openai", "model": "gpt-4o-mini"}]}},
        }
    },
}


def sample_service(service: str) -> dict[str, Any]:
    return {
        "secret_name": f"parley-{service}",
        "pod_annotations": {"checksum/secret": CHECKSUM},
        "autoscaling": {"minReplicas": 3, "maxReplicas": 7},
        "config": {"QDRANT_URL": QDRANT_URL} if service == "retrieval" else {},
    }


def templates() -> list[Path]:
    return sorted((PARLEY / "values").glob("*.yaml.tftpl"))


def fill(template: Path, variables: dict[str, Any]) -> dict[str, Any]:
    """templatefile() with JSON values, as the module calls it."""
    text = template.read_text()
    assert "%{" not in text.replace("%%{", ""), f"{template.name}: directives are not expected"
    used = set(PLACEHOLDER.findall(text))
    assert used == set(variables), f"{template.name}: uses {used}, given {set(variables)}"
    filled = PLACEHOLDER.sub(lambda match: json.dumps(variables[match[1]]), text)
    values: dict[str, Any] = yaml.safe_load(filled.replace("$${", "${"))
    return values


def test_every_placeholder_is_given_by_the_module() -> None:
    """templatefile() fails on a variable it is not given: each must be a key the module sets."""
    main = (PARLEY / "main.tf").read_text()
    assert templates()
    for template in templates():
        for name in set(PLACEHOLDER.findall(template.read_text())):
            assert re.fullmatch(r"[a-z_]+", name), f"{template.name}: ${{{name}}} is not a name"
            assert re.search(rf"^\s*{name}\s*=", main, re.M), f"{template.name}: {name}"
        service = template.name.removesuffix(".yaml.tftpl")
        if service in SERVICES:
            assert re.search(rf"^\s*{service}\s*=\s*{{", main, re.M), f"own_values.{service}"
    assert {t.name.removesuffix(".yaml.tftpl") for t in templates()} == {
        "common",
        "service",
        *SAMPLE_OWN,
    }


def terraform_values(service: str) -> dict[str, Any]:
    """The chart values of one release, in the module's order (later files win)."""
    values = fill(PARLEY / "values" / "common.yaml.tftpl", SAMPLE_COMMON)
    values = merged(values, fill(PARLEY / "values" / "service.yaml.tftpl", sample_service(service)))
    own = PARLEY / "values" / f"{service}.yaml.tftpl"
    if own.exists():
        values = merged(values, fill(own, SAMPLE_OWN[service]))
    return values


def pod_secrets(rendered: Rendered) -> set[str]:
    """The Secrets the service's pods and migration Job take their environment from."""
    return {
        source["secretRef"]["name"]
        for workload in rendered.kind("Deployment") + rendered.kind("Job")
        for container in workload["spec"]["template"]["spec"]["containers"]
        for source in container.get("envFrom", [])
        if "secretRef" in source
    }


@pytest.mark.parametrize("service", SERVICES)
def test_each_chart_takes_what_terraform_gives_it(service: str) -> None:
    # The charts' values.schema.json refuse any key or type they do not know.
    rendered = render(service, terraform_values(service), release=f"parley-{service}")
    deployment = rendered.get("Deployment", f"parley-{service}")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == f"{SAMPLE_COMMON['image_registry']}/parley-{service}:1.4.2"
    assert pod_secrets(rendered) == {f"parley-{service}"}
    assert pod["metadata"]["annotations"]["checksum/secret"] == CHECKSUM
    hpa = rendered.get("HorizontalPodAutoscaler", f"parley-{service}")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    assert rendered.kind("ServiceMonitor"), "the Prometheus operator is there: scrape"
    settings = rendered.get("ConfigMap", f"parley-{service}")["data"]
    assert settings["OTEL_EXPORTER_OTLP_ENDPOINT"] == SAMPLE_COMMON["otel_endpoint"]
    if service == "retrieval":
        assert settings["QDRANT_URL"] == QDRANT_URL


# Volume kinds the restricted Pod Security Standard admits.
RESTRICTED_VOLUMES = {"configMap", "emptyDir", "secret", "projected", "downwardAPI", "ephemeral"}


@pytest.mark.parametrize("service", SERVICES)
def test_pods_meet_the_restricted_standard_their_namespace_enforces(service: str) -> None:
    (namespace,) = [
        body
        for (type_, name), body in typed_blocks(PARLEY, "resource").items()
        if type_ == "kubernetes_namespace_v1"
    ]
    (metadata,) = namespace["metadata"]
    labels = metadata["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    rendered = render(service, terraform_values(service), release=f"parley-{service}")
    for workload in rendered.kind("Deployment") + rendered.kind("Job"):
        pod = workload["spec"]["template"]["spec"]
        assert not {"hostNetwork", "hostPID", "hostIPC"} & {k for k, v in pod.items() if v}
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, volume
        for container in pod["containers"] + pod.get("initContainers", []):
            context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            assert context["runAsNonRoot"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
            assert context["seccompProfile"]["type"] in {"RuntimeDefault", "Localhost"}


def egress_ports(rendered: Rendered, service: str, peer: dict[str, Any]) -> set[int]:
    policy = rendered.get("NetworkPolicy", f"parley-{service}-allow")
    return {
        port["port"]
        for rule in policy["spec"]["egress"]
        if peer in rule.get("to", [])
        for port in rule["ports"]
    }


def test_services_reach_their_stores_through_the_peers_terraform_names() -> None:
    vpc = SAMPLE_COMMON["store_peers"][0]
    qdrant = SAMPLE_COMMON["qdrant_peers"][0]
    collector = SAMPLE_COMMON["collector_peers"][0]
    expected = {
        "conversation": [(vpc, 5432)],
        "ingest": [(vpc, 5432)],
        "llm-router": [(vpc, 5432), (vpc, 6379)],
        "retrieval": [(qdrant, 6333), (qdrant, 6334)],
        "gateway": [],
    }
    for service, wanted in expected.items():
        rendered = render(service, terraform_values(service), release=f"parley-{service}")
        for peer, port in wanted:
            assert port in egress_ports(rendered, service, peer), (service, peer, port)
        assert 4317 in egress_ports(rendered, service, collector), service


def test_the_gateway_is_published_through_the_ingress_controller_only() -> None:
    rendered = render("gateway", terraform_values("gateway"), release="parley-gateway")
    (ingress,) = rendered.kind("Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "parley.example.com"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    policy = rendered.get("NetworkPolicy", "parley-gateway-allow")
    public = [rule for rule in policy["spec"]["ingress"] if "from" not in rule]
    assert not public, "every ingress rule names its sources"


def test_llm_router_routes_reach_its_routes_file() -> None:
    rendered = render("llm-router", terraform_values("llm-router"), release="parley-llm-router")
    routes = rendered.get("ConfigMap", "parley-llm-router-routes")["data"]["routes.yaml"]
    assert yaml.safe_load(routes) == SAMPLE_OWN["llm-router"]["routes"]


# The parley module evaluated by Terraform itself, its reads of Secrets Manager and of other
# resources replaced by stand-ins: the locals' logic, run for real without a cloud.

STAND_INS = {
    "data.aws_secretsmanager_secret_version.postgres.secret_string": (
        'sensitive(jsonencode({ username = "parley", password = "p@ss:w/rd#1" }))'
    ),
    "data.aws_secretsmanager_secret_version.redis.secret_string": 'sensitive("redis+token")',
    "data.aws_secretsmanager_secret_version.qdrant.secret_string": 'sensitive("qdrant-key")',
    "data.aws_secretsmanager_secret_version.provider_keys": (
        '[{ secret_string = sensitive(jsonencode({ OPENAI_API_KEY = "openai-key" })) }]'
    ),
    "data.aws_secretsmanager_secret_version.embeddings": "[]",
    "aws_secretsmanager_secret_version.auth.secret_string": 'sensitive("auth-secret")',
    "kubernetes_secret_v1.service[service].metadata[0].name": '"parley-${service}"',
}
# The module's inputs that the samples above stand for.
PARLEY_INPUTS: dict[str, Any] = {
    "name": "parley-staging",
    "image_registry": SAMPLE_COMMON["image_registry"],
    "image_tag": SAMPLE_COMMON["image_tag"],
    "kms_key_arn": "arn:aws:kms:eu-west-1:123456789012:key/0",
    "vpc_cidr_block": "10.20.0.0/16",
    "postgres": {
        "address": "db.example",
        "port": 5432,
        "database": "parley",
        "master_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db",
    },
    "redis": {
        "host": "redis.example",
        "port": 6379,
        "auth_token_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:redis",
    },
    "qdrant": {
        "url": QDRANT_URL,
        "api_key_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:qdrant",
        "network_peers": {"to": SAMPLE_COMMON["qdrant_peers"], "ports": [6333, 6334]},
    },
    "observability": {
        "otlp_endpoint": SAMPLE_COMMON["otel_endpoint"],
        "namespace": "monitoring",
        "service_monitors": True,
    },
    "provider_keys_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:keys",
    "llm_router_routes": yaml.safe_dump(SAMPLE_OWN["llm-router"]["routes"]),
    "gateway_ingress": {"host": "parley.example.com", "tls_secret_name": "parley-gateway-tls"},
    "autoscaling": {service: {"min_replicas": 3, "max_replicas": 7} for service in SERVICES},
}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if TERRAFORM_BIN is None:
        pytest.skip("no terraform binary here")
    main = (PARLEY / "main.tf").read_text()
    found = re.search(r"^locals \{$.*?^\}$", main, re.M | re.S)
    assert found, "modules/parley/main.tf has no locals block"
    code = found[0]
    for reference, stand_in in STAND_INS.items():
        assert reference in code, f"the locals no longer read {reference}: update STAND_INS"
        code = code.replace(reference, stand_in)
    # helm_release.service's values, for every service at once.
    release = re.search(r"^  values = (compact\(\[$.*?^  \]\))$", main, re.M | re.S)
    assert release, "helm_release.service no longer sets values = compact([...])"
    per_service = release[1].replace("each.key", "service")
    rendered = f"{{ for service in local.services : service => {per_service} }}"
    code += f"\nlocals {{\n  rendered = {rendered}\n}}\n"
    folder = tmp_path_factory.mktemp("parley-locals")
    shutil.copy(PARLEY / "variables.tf", folder)
    shutil.copytree(PARLEY / "values", folder / "values")
    (folder / "main.tf").write_text(code)
    (folder / "terraform.tfvars.json").write_text(json.dumps(PARLEY_INPUTS))
    values = console(folder, "local.rendered")
    secrets = console(folder, "local.secrets")
    return {"values": values, "secrets": secrets}


def test_the_module_computes_the_values_the_samples_stand_for(evaluated: dict[str, Any]) -> None:
    for service in SERVICES:
        documents = [yaml.safe_load(text) for text in evaluated["values"][service]]
        values: dict[str, Any] = {}
        for document in documents:
            values = merged(values, document)
        checksum = values["podAnnotations"]["checksum/secret"]
        assert re.fullmatch(r"[0-9a-f]{64}", checksum)
        values["podAnnotations"]["checksum/secret"] = CHECKSUM
        assert values == terraform_values(service), service


def test_the_module_builds_each_services_secret(evaluated: dict[str, Any]) -> None:
    database = "postgresql://parley:p%40ss%3Aw%2Frd%231@db.example:5432/parley?ssl=require"
    redis = "rediss://:redis%2Btoken@redis.example:6379/0"
    assert evaluated["secrets"] == {
        "gateway": {"AUTH_SECRET": "auth-secret", "DATABASE_URL": database, "REDIS_URL": redis},
        "conversation": {"DATABASE_URL": database},
        "ingest": {"DATABASE_URL": database},
        "llm-router": {
            "DATABASE_URL": database,
            "REDIS_URL": redis,
            "OPENAI_API_KEY": "openai-key",
        },
        "retrieval": {"QDRANT_API_KEY": "qdrant-key"},
    }

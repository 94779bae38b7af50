"""Writes values.schema.json for every Parley chart from the one description below.

The five service charts share most of their values, so their schemas are built here rather
than copied five times. Objects refuse unknown keys, so a misspelt value stops `helm install`
instead of being ignored. After changing a chart's values:

    uv run python deploy/helm/values_schema.py           # rewrite the schemas
    uv run python deploy/helm/values_schema.py --check   # exit 1 if one is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HELM = Path(__file__).resolve().parent
SERVICES = ("gateway", "conversation", "llm-router", "retrieval", "ingest")
WITH_DATABASE = ("gateway", "conversation", "llm-router", "ingest")

# Set by the charts themselves (ports, peers, migration mode...) or by a value of their own.
MANAGED_SETTINGS = (
    "LOG_LEVEL",
    "METRICS_PORT",
    "SHUTDOWN_GRACE_SECONDS",
    "GRPC_HOST",
    "GRPC_PORT",
    "HTTP_HOST",
    "HTTP_PORT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "DB_AUTO_MIGRATE",
    "ROUTES_FILE",
    "STREAM_TIMEOUT_SECONDS",
    "CONVERSATION_ADDR",
    "LLM_ROUTER_ADDR",
    "RETRIEVAL_ADDR",
    "INGEST_ADDR",
)
# Settings that hold credentials: they belong in the Secret, never in a ConfigMap.
SECRET_SETTINGS = (
    "AUTH_SECRET",
    "DATABASE_URL",
    "REDIS_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "QDRANT_API_KEY",
    "EMBEDDINGS_API_KEY",
)

Schema = dict[str, Any]


def obj(properties: dict[str, Schema], **extra: Any) -> Schema:
    """An object with exactly these keys, all optional (values.yaml gives the defaults)."""
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


def string(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def ref(name: str) -> Schema:
    return {"$ref": f"#/definitions/{name}"}


BOOLEAN: Schema = {"type": "boolean"}
STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
ANY_OBJECTS: Schema = {"type": "array", "items": {"type": "object"}}
NAME: Schema = string(pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$", maxLength=63)

# Shapes used more than once, written once in each schema's "definitions".
DEFINITIONS: dict[str, Schema] = {
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "quantity": {"type": ["string", "number"], "pattern": r"^[0-9.]+[a-zA-Z]*$"},
    "resourceList": obj(
        {"cpu": ref("quantity"), "memory": ref("quantity"), "ephemeral-storage": ref("quantity")}
    ),
    "resources": obj({"requests": ref("resourceList"), "limits": ref("resourceList")}),
    "labelSelector": obj(
        {
            "matchLabels": STRING_MAP,
            "matchExpressions": {
                "type": "array",
                "items": obj(
                    {
                        "key": string(),
                        "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                        "values": {"type": "array", "items": string()},
                    },
                    required=["key", "operator"],
                ),
            },
        }
    ),
    # A NetworkPolicy peer: a CIDR, or namespace and pod selectors.
    "peer": obj(
        {
            "ipBlock": obj(
                {"cidr": string(), "except": {"type": "array", "items": string()}},
                required=["cidr"],
            ),
            "namespaceSelector": ref("labelSelector"),
            "podSelector": ref("labelSelector"),
        },
        minProperties=1,
    ),
    "peers": {"type": "array", "items": ref("peer")},
    # Where a store or the collector is, and its ports.
    "target": obj(
        {
            "to": {"type": "array", "items": ref("peer"), "minItems": 1},
            "ports": {"type": "array", "items": ref("port"), "minItems": 1},
        },
        required=["to", "ports"],
    ),
    "probe": obj(
        {
            "initialDelaySeconds": {"type": "integer", "minimum": 0},
            "periodSeconds": {"type": "integer", "minimum": 1},
            "timeoutSeconds": {"type": "integer", "minimum": 1},
            "failureThreshold": {"type": "integer", "minimum": 1},
            "successThreshold": {"type": "integer", "minimum": 1},
        }
    ),
    "global": obj(
        {
            "namePrefix": string(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", maxLength=30),
            "clusterDomain": string(minLength=1),
            "image": obj({"registry": string(), "tag": string()}),
            "otelEndpoint": string(pattern=r"^(https?://.+)?$"),
            "existingSecrets": obj({service: NAME for service in SERVICES}),
            "networkPolicy": obj(
                {
                    "enabled": BOOLEAN,
                    "dns": ref("peers"),
                    "metricsScrapers": ref("peers"),
                    "database": ref("target"),
                    "redis": ref("target"),
                    "qdrant": ref("target"),
                    "otelCollector": ref("target"),
                }
            ),
        }
    ),
}

CONFIG: Schema = {
    "type": "object",
    "description": "More settings as environment variables; not secrets, not chart-managed ones.",
    "propertyNames": {
        "pattern": "^[A-Z][A-Z0-9_]*$",
        "not": {
            "anyOf": [
                {"enum": list(MANAGED_SETTINGS + SECRET_SETTINGS)},
                {"pattern": "(KEY|SECRET|PASSWORD|TOKEN)$"},
            ]
        },
    },
    # Nor a URL that carries a password, whatever its key.
    "additionalProperties": {
        "type": ["string", "number", "boolean"],
        "not": {"type": "string", "pattern": r"://[^/@\s]+:[^/@\s]*@"},
    },
}


def service_schema(service: str) -> Schema:
    """The values of one service chart."""
    network: dict[str, Schema] = {"extraIngress": ANY_OBJECTS, "extraEgress": ANY_OBJECTS}
    properties: dict[str, Schema] = {
        "enabled": BOOLEAN,
        "image": obj(
            {
                "registry": string(),
                "repository": string(minLength=1),
                "tag": string(),
                "digest": string(pattern=r"^(sha256:[a-f0-9]{64})?$"),
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            }
        ),
        "imagePullSecrets": {"type": "array", "items": obj({"name": NAME}, required=["name"])},
        "replicaCount": {"type": "integer", "minimum": 1},
        "autoscaling": obj(
            {
                "enabled": BOOLEAN,
                "minReplicas": {"type": "integer", "minimum": 1},
                "maxReplicas": {"type": "integer", "minimum": 1},
                "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1},
                "podMetric": obj({"name": string(), "averageValue": string()}),
                "scaleDownStabilizationSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
            }
        ),
        "podDisruptionBudget": obj(
            {"enabled": BOOLEAN, "maxUnavailable": {"type": ["integer", "string"]}}
        ),
        "resources": ref("resources"),
        "logLevel": {"enum": ["DEBUG", "INFO", "WARNING", "ERROR"]},
        "shutdownGraceSeconds": {"type": "integer", "minimum": 1},
        "preStopSeconds": {"type": "integer", "minimum": 0, "maximum": 60},
        "probes": obj(
            {"startup": ref("probe"), "liveness": ref("probe"), "readiness": ref("probe")}
        ),
        "config": CONFIG,
        "existingSecret": NAME,
        "serviceAccount": obj({"annotations": STRING_MAP}),
        "serviceMonitor": obj(
            {"enabled": BOOLEAN, "interval": string(pattern=r"^[0-9]+[smh]$"), "labels": STRING_MAP}
        ),
        "networkPolicy": obj(network),
        "podAnnotations": STRING_MAP,
        "priorityClassName": string(),
        "nodeSelector": STRING_MAP,
        "tolerations": ANY_OBJECTS,
        "affinity": {"type": "object"},
        "topologySpread": obj(
            {
                "enabled": BOOLEAN,
                "whenUnsatisfiable": {"enum": ["ScheduleAnyway", "DoNotSchedule"]},
            }
        ),
        "tmpSizeLimit": ref("quantity"),
        "global": ref("global"),
        # Helm gives every dependency a values scope, the library chart included; it reads none.
        "parley-lib": {"type": "object"},
    }
    if service == "gateway":
        properties["streamTimeoutSeconds"] = {"type": "integer", "minimum": 1}
        network["ingressFrom"] = ref("peers")
        properties["ingress"] = obj(
            {
                "enabled": BOOLEAN,
                "className": string(),
                "annotations": STRING_MAP,
                "host": string(),
                "tlsSecretName": NAME,
            }
        )
        properties["httpRoute"] = obj(
            {
                "enabled": BOOLEAN,
                "parentRefs": ANY_OBJECTS,
                "hostnames": {"type": "array", "items": string()},
            }
        )
    if service in WITH_DATABASE:
        properties["migrations"] = obj(
            {
                "enabled": BOOLEAN,
                "backoffLimit": {"type": "integer", "minimum": 0},
                "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                "resources": ref("resources"),
            }
        )
    if service == "llm-router":
        properties["routes"] = {
            "type": "object",
            "description": "The routes file's content (services/llm-router/README.md).",
        }
        network["providers"] = obj(
            {
                "cidr": string(),
                "except": {"type": "array", "items": string()},
                "ports": {"type": "array", "items": ref("port"), "minItems": 1},
            },
            required=["cidr", "ports"],
        )
    return document(f"Values of the {service} chart.", properties)


def umbrella_schema() -> Schema:
    """The umbrella's own keys; each service's keys are checked by that chart's schema."""
    properties: dict[str, Schema] = {
        service: {"type": "object", "properties": {"enabled": BOOLEAN}} for service in SERVICES
    }
    properties["global"] = ref("global")
    properties["observability"] = obj(
        {
            "dashboards": obj(
                {"enabled": BOOLEAN, "labels": STRING_MAP, "annotations": STRING_MAP}
            ),
            "prometheusRule": obj({"enabled": BOOLEAN, "labels": STRING_MAP}),
            "runbookBaseUrl": string(pattern=r"^(https?://\S+)?$"),
        }
    )
    return document("Values of the parley umbrella chart.", properties)


def document(title: str, properties: dict[str, Schema]) -> Schema:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": title,
        **obj(properties),
        "definitions": DEFINITIONS,
    }


def schemas() -> dict[Path, str]:
    """Every chart's schema file and its content."""
    documents = {HELM / service: service_schema(service) for service in SERVICES}
    documents[HELM / "parley"] = umbrella_schema()
    return {
        chart / "values.schema.json": json.dumps(schema, indent=2) + "\n"
        for chart, schema in documents.items()
    }


def main(argv: list[str]) -> int:
    wanted = schemas()
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(HELM)} is out of date: run {Path(__file__).name}")
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path])
        print(f"wrote {path.relative_to(HELM)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

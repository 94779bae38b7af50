"""The NetworkPolicies follow the call graph, and checkov finds nothing but the written-down
skips in the rendered manifests."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Any

import pytest
import yaml

from .charts_render import (
    HELM,
    REPO,
    SERVICES,
    Manifest,
    Rendered,
    production_values,
    render,
    scratch,
    service_of,
    uv,
)

# Who calls whom: the "calls" column of ARCHITECTURE.md's table of services, between services.
CALLS = {
    "gateway": {"conversation", "ingest", "retrieval", "llm-router"},
    "conversation": {"llm-router", "retrieval"},
    "llm-router": set(),
    "retrieval": set(),
    "ingest": {"retrieval"},
}
# Anything that is not a Parley service's pods: an ipBlock, or pods of another namespace.
OUTSIDE = "outside"
ANYONE = "anyone"


@pytest.fixture(scope="module", params=["default", "production"])
def platform(request: pytest.FixtureRequest) -> Rendered:
    return render("parley", production_values("parley") if request.param == "production" else None)


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a pod's labels."""
    wanted = selector.get("matchLabels", {})
    if any(labels.get(key) != value for key, value in wanted.items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        present = key in labels
        value_in = labels.get(key) in expression.get("values", [])
        if not {
            "In": value_in,
            "NotIn": not value_in,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def workloads(rendered: Rendered) -> list[Manifest]:
    return rendered.kind("Deployment") + rendered.kind("Job")


def labels(workload: Manifest) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def server(rendered: Rendered, service: str) -> Manifest:
    return rendered.get("Deployment", f"parley-{service}")


def ports_of(workload: Manifest) -> dict[str, int]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {port["name"]: port["containerPort"] for port in container["ports"]}


def policies(rendered: Rendered, workload: Manifest, direction: str) -> list[Manifest]:
    """The NetworkPolicies that govern a workload's pods in one direction."""
    return [
        policy
        for policy in rendered.kind("NetworkPolicy")
        if direction in policy["spec"]["policyTypes"]
        and matches(policy["spec"]["podSelector"], labels(workload))
    ]


def peers(rendered: Rendered, peer_list: list[dict[str, Any]] | None) -> set[str]:
    """Who a `from` or `to` list names: Parley services by name, else OUTSIDE; none: ANYONE."""
    if peer_list is None:
        return {ANYONE}
    named: set[str] = set()
    for peer in peer_list:
        if "ipBlock" in peer or "namespaceSelector" in peer:
            named.add(OUTSIDE)
            continue
        named |= {
            service_of(workload)
            for workload in rendered.kind("Deployment")
            if matches(peer["podSelector"], labels(workload))
        }
    return named


def port_allowed(rule: dict[str, Any], name: str, number: int) -> bool:
    ports = rule.get("ports")
    return ports is None or any(port.get("port") in (name, number) for port in ports)


def admitted(rendered: Rendered, service: str, port_name: str) -> set[str]:
    """Who may open a connection to a service's pods on one of their ports."""
    workload = server(rendered, service)
    number = ports_of(workload)[port_name]
    sources: set[str] = set()
    for policy in policies(rendered, workload, "Ingress"):
        for rule in policy["spec"].get("ingress", []):
            if port_allowed(rule, port_name, number):
                sources |= peers(rendered, rule.get("from"))
    return sources


def reached(rendered: Rendered, workload: Manifest) -> dict[str, set[int]]:
    """Where a workload's pods may connect, with the ports: Parley services, or CIDRs."""
    targets: dict[str, set[int]] = {}
    for policy in policies(rendered, workload, "Egress"):
        for rule in policy["spec"].get("egress", []):
            ports = {port["port"] for port in rule.get("ports", [])}
            for peer in rule.get("to", [{"ipBlock": {"cidr": "0.0.0.0/0"}}]):
                if "ipBlock" in peer:
                    key = peer["ipBlock"]["cidr"]
                elif "namespaceSelector" in peer:
                    key = OUTSIDE
                else:
                    (key,) = peers(rendered, [peer]) or {"nobody"}
                targets.setdefault(key, set()).update(ports)
    return targets


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_admits_exactly_its_callers(platform: Rendered, service: str) -> None:
    callers = {caller for caller, callees in CALLS.items() if service in callees}
    if service == "gateway":
        callers.add(OUTSIDE)  # through the ingress controller or Gateway; nothing else is public
    serving_port = "grpc" if service != "gateway" else "http"
    assert admitted(platform, service, serving_port) == callers
    assert admitted(platform, service, "metrics") == {OUTSIDE}  # the scrapers' namespace


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_reaches_its_callees_on_their_ports(platform: Rendered, service: str) -> None:
    targets = reached(platform, server(platform, service))
    assert {target for target in targets if target in CALLS} == CALLS[service]
    for callee in CALLS[service]:
        assert targets[callee] == {ports_of(server(platform, callee))["grpc"]}


def test_only_the_router_leaves_the_cluster_and_only_on_443(platform: Rendered) -> None:
    private = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]

    def public(cidr: str) -> bool:
        network = ipaddress.ip_network(cidr)
        return not any(network.subnet_of(block) for block in private)  # type: ignore[arg-type]

    for workload in workloads(platform):
        leaving = {
            cidr: ports
            for cidr, ports in reached(platform, workload).items()
            if "/" in cidr and public(cidr)
        }
        if workload["metadata"]["name"] == "parley-llm-router":
            assert leaving == {"0.0.0.0/0": {443}}
        else:
            assert leaving == {}, workload["metadata"]["name"]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_reaches_dns_and_only_its_own_stores(platform: Rendered, service: str) -> None:
    targets = reached(platform, server(platform, service))
    ports = set().union(*targets.values())
    assert 53 in ports
    stores = {
        "gateway": {5432, 6379},
        "conversation": {5432},
        "llm-router": {5432, 6379},
        "ingest": {5432},
    }
    expected = stores.get(service, set()) | ({6333, 6334} if service == "retrieval" else set())
    store_ports = {5432, 6379, 6333, 6334}
    assert ports & store_ports == expected
    otel = platform.get("ConfigMap", f"parley-{service}")["data"].get("OTEL_EXPORTER_OTLP_ENDPOINT")
    assert (4317 in ports) == bool(otel)


def test_every_pod_starts_denied_both_ways(platform: Rendered) -> None:
    for workload in workloads(platform):
        name = workload["metadata"]["name"]
        governing = [
            policy
            for policy in policies(platform, workload, "Ingress")
            if "Egress" in policy["spec"]["policyTypes"]
        ]
        assert governing, f"no default-deny policy for {name}"
    # The migration Job's pods talk to DNS and the database, and nobody talks to them.
    for job in platform.kind("Job"):
        assert all(not p["spec"].get("ingress") for p in policies(platform, job, "Ingress"))
        ports = set().union(*reached(platform, job).values())
        assert ports == {53, 5432}, job["metadata"]["name"]


def rendered_manifests() -> dict[str, str]:
    """The umbrella chart's manifests, as `helm template` prints them, per set of values."""
    return {
        value_set: yaml.safe_dump_all(list(render("parley", values)), sort_keys=False)
        for value_set, values in (
            ("default", None),
            ("production", production_values("parley")),
        )
    }


def test_checkov_finds_nothing_but_the_written_down_skips() -> None:
    folder = scratch() / "checkov"
    folder.mkdir()
    for value_set, text in rendered_manifests().items():
        (folder / f"{value_set}.yaml").write_text(text)
    run = subprocess.run(
        [
            *(uv(), "run", "--project", str(REPO / "deploy" / "checkov"), "--frozen", "checkov"),
            *("-d", str(folder), "--framework", "kubernetes", "--skip-download"),
            *("--quiet", "--output", "json"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=100,
    )
    assert run.stdout.startswith("{"), run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 1000
    found = {
        (failure["check_id"], failure["file_path"].strip("/").removesuffix(".yaml"))
        for failure in report["results"]["failed_checks"]
    }
    skips = yaml.safe_load((HELM / "checkov-skips.yaml").read_text())
    allowed = {(check, value_set) for check, skip in skips.items() for value_set in skip["renders"]}
    assert all(skip["reason"].strip() for skip in skips.values())
    assert found - allowed == set(), "findings without a written-down skip"
    assert allowed - found == set(), "skips that no longer match a finding: remove them"

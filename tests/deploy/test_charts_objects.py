"""What the rendered objects must say for the platform to run as designed: autoscalers on
their own Deployments, probes on declared ports, headless Services for the gRPC clients,
migrations before new pods, locked-down pods, no secret in a ConfigMap, one service's upgrade
touching that service alone."""

from __future__ import annotations

import re

import pytest

from parley_conversation import main as conversation_main
from parley_ingest import main as ingest_main
from parley_llm_router import main as llm_router_main
from parley_retrieval import main as retrieval_main

from .charts_render import (
    GRPC_PORTS,
    NAMESPACE,
    SERVICES,
    WITH_DATABASE,
    Manifest,
    Rendered,
    Values,
    merged,
    production_values,
    render,
    service_of,
)

SECRET_SETTINGS = (
    "AUTH_SECRET",
    "DATABASE_URL",
    "REDIS_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "QDRANT_API_KEY",
    "EMBEDDINGS_API_KEY",
)
PASSWORD_IN_URL = re.compile(r"://[^/@\s]+:[^/@\s]*@")
HOOK = "helm.sh/hook"


@pytest.fixture(scope="module", params=["default", "production"])
def platform(request: pytest.FixtureRequest) -> Rendered:
    """The umbrella chart's objects, with its defaults or with production values."""
    return render("parley", production_values("parley") if request.param == "production" else None)


def deployment(rendered: Rendered, service: str) -> Manifest:
    return rendered.get("Deployment", f"parley-{service}")


def container(workload: Manifest) -> Manifest:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def settings(rendered: Rendered, service: str) -> dict[str, str]:
    return dict(rendered.get("ConfigMap", f"parley-{service}")["data"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def pod_labels(workload: Manifest) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def pod_specs(rendered: Rendered) -> list[tuple[Manifest, Manifest]]:
    return [(item, item["spec"]["template"]["spec"]) for item in rendered.kind("Deployment")] + [
        (item, item["spec"]["template"]["spec"]) for item in rendered.kind("Job")
    ]


@pytest.mark.parametrize("service", SERVICES)
def test_each_autoscaler_scales_its_own_deployment(platform: Rendered, service: str) -> None:
    hpa = platform.get("HorizontalPodAutoscaler", f"parley-{service}")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert service_of(platform.get("Deployment", target["name"])) == service
    assert "replicas" not in deployment(platform, service)["spec"], "the HPA owns the count"
    metrics = {metric["type"]: metric for metric in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    # Streams last minutes: scaling down must wait well beyond the default five minutes' dip.
    scale_down = hpa["spec"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 300
    assert scale_down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]


def test_a_per_pod_custom_metric_scales_the_router_in_production() -> None:
    hpa = render("parley", production_values("parley")).get(
        "HorizontalPodAutoscaler", "parley-llm-router"
    )
    (pods,) = [metric["pods"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Pods"]
    assert pods["metric"]["name"] == "parley_llm_in_flight"
    assert pods["target"] == {"type": "AverageValue", "averageValue": "400"}
    assert (
        render("llm-router", {"autoscaling": {"enabled": False}}).kind("HorizontalPodAutoscaler")
        == []
    )


@pytest.mark.parametrize("service", SERVICES)
def test_probes_ask_ports_the_container_declares(platform: Rendered, service: str) -> None:
    main = container(deployment(platform, service))
    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    probes = {kind: main[f"{kind}Probe"] for kind in ("startup", "liveness", "readiness")}
    for kind, probe in probes.items():
        if service in GRPC_PORTS:
            # Native gRPC probes call the standard health service on the serving port.
            assert probe["grpc"]["port"] == ports["grpc"] == GRPC_PORTS[service], kind
        else:
            assert probe["httpGet"]["port"] in ports, kind
            assert ports[probe["httpGet"]["port"]] == int(settings(platform, service)["HTTP_PORT"])
    if service == "gateway":
        assert probes["liveness"]["httpGet"]["path"] == "/healthz"
        assert probes["readiness"]["httpGet"]["path"] == "/readyz"
    else:
        # Liveness asks for the process (""), readiness for the service's own name, which
        # the runtime reports NOT_SERVING while the service's database does not answer.
        assert "service" not in probes["startup"]["grpc"]
        assert "service" not in probes["liveness"]["grpc"]
        assert probes["readiness"]["grpc"]["service"] == HEALTH_NAMES[service]
    assert ports["metrics"] == int(settings(platform, service)["METRICS_PORT"])


# The gRPC service each image serves, as its main.py registers it.
HEALTH_NAMES = {
    "conversation": conversation_main.SERVICE,
    "llm-router": llm_router_main.SERVICE,
    "retrieval": retrieval_main.SERVICE,
    "ingest": ingest_main.SERVICE,
}


@pytest.mark.parametrize("service", sorted(GRPC_PORTS))
def test_headless_service_resolves_to_the_grpc_pods(platform: Rendered, service: str) -> None:
    headless = platform.get("Service", f"parley-{service}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    pods = deployment(platform, service)
    assert selects(headless["spec"]["selector"], pod_labels(pods))
    (port,) = headless["spec"]["ports"]
    declared = {p["name"]: p["containerPort"] for p in container(pods)["ports"]}
    assert port["port"] == declared[port["targetPort"]] == GRPC_PORTS[service]
    # Neither the migration Job's pods nor another service's are behind it.
    for other in platform.kind("Deployment") + platform.kind("Job"):
        if other is not pods:
            assert not selects(headless["spec"]["selector"], pod_labels(other))


def test_callers_dial_the_headless_services(platform: Rendered) -> None:
    peers = {
        "CONVERSATION_ADDR": "conversation",
        "LLM_ROUTER_ADDR": "llm-router",
        "RETRIEVAL_ADDR": "retrieval",
        "INGEST_ADDR": "ingest",
    }
    dialled = 0
    for service in SERVICES:
        for variable, peer in peers.items():
            address = settings(platform, service).get(variable)
            if address is None:
                continue
            host, port = address.rsplit(":", 1)
            assert host == f"parley-{peer}-headless.{NAMESPACE}.svc.cluster.local"
            assert int(port) == GRPC_PORTS[peer]
            platform.get("Service", f"parley-{peer}-headless")
            dialled += 1
    assert dialled == 7  # gateway 4, conversation 2, ingest 1


def test_pods_are_locked_down(platform: Rendered) -> None:
    accounts = {item["metadata"]["name"]: item for item in platform.kind("ServiceAccount")}
    assert all(account["automountServiceAccountToken"] is False for account in accounts.values())
    for workload, pod in pod_specs(platform):
        name = workload["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["serviceAccountName"] in accounts, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        main = container(workload)
        context = main["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        assert context["runAsUser"] >= 10000, name
        assert {"cpu", "memory"} <= set(main["resources"]["requests"]), name
        assert {"cpu", "memory"} <= set(main["resources"]["limits"]), name
        # /tmp is the one writable path, and a bounded one.
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        (tmp,) = [mount for mount in main["volumeMounts"] if mount["mountPath"] == "/tmp"]
        assert volumes[tmp["name"]]["emptyDir"]["sizeLimit"], name


@pytest.mark.parametrize("service", SERVICES)
def test_pods_drain_before_they_are_killed(platform: Rendered, service: str) -> None:
    pods = deployment(platform, service)
    spec = pods["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pause = container(pods)["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    drain = float(settings(platform, service)["SHUTDOWN_GRACE_SECONDS"])
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > int(pause[1]) + drain
    spread = spec["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    assert all(selects(c["labelSelector"]["matchLabels"], pod_labels(pods)) for c in spread)
    budget = platform.get("PodDisruptionBudget", f"parley-{service}")
    assert selects(budget["spec"]["selector"]["matchLabels"], pod_labels(pods))


def test_streaming_hops_drain_for_the_longest_stream() -> None:
    # A pod removed by a rollout or the HPA lets its answers finish rather than cut them.
    rendered = render("parley")
    for service in ("gateway", "conversation", "llm-router"):
        assert float(settings(rendered, service)["SHUTDOWN_GRACE_SECONDS"]) >= 300, service


@pytest.mark.parametrize("service", WITH_DATABASE)
def test_migrations_run_in_a_hook_before_the_new_pods(platform: Rendered, service: str) -> None:
    job = platform.get("Job", f"parley-{service}-migrate")
    annotations = job["metadata"]["annotations"]
    assert set(annotations[HOOK].split(",")) == {"pre-install", "pre-upgrade"}
    pods = deployment(platform, service)
    assert HOOK not in pods["metadata"].get("annotations", {}), "pods are no hook: they follow"
    migrate = container(job)
    assert migrate["command"] + migrate["args"] == [f"parley-{service}", "migrate", "upgrade"]
    assert migrate["image"] == container(pods)["image"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"

    def database_url(workload: Manifest) -> Manifest:
        (variable,) = [v for v in container(workload)["env"] if v["name"] == "DATABASE_URL"]
        return dict(variable["valueFrom"]["secretKeyRef"])

    assert database_url(job) == database_url(pods)
    assert settings(platform, service)["DB_AUTO_MIGRATE"] == "false"
    # What the Job needs exists before it: its ServiceAccount and NetworkPolicy are hooks too,
    # of a lower weight (the release's own objects are created only after the hooks).
    weight = int(annotations["helm.sh/hook-weight"])
    for kind in ("ServiceAccount", "NetworkPolicy"):
        helper = platform.get(kind, f"parley-{service}-migrate")["metadata"]["annotations"]
        assert helper[HOOK] == annotations[HOOK], kind
        assert int(helper["helm.sh/hook-weight"]) < weight, kind
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == f"parley-{service}-migrate"


def test_without_the_hook_pods_migrate_at_start() -> None:
    rendered = render("conversation", {"migrations": {"enabled": False}})
    assert rendered.kind("Job") == []
    assert settings(rendered, "conversation")["DB_AUTO_MIGRATE"] == "true"
    # retrieval has no database.
    assert render("retrieval").kind("Job") == []
    assert "DB_AUTO_MIGRATE" not in settings(render("retrieval"), "retrieval")


@pytest.mark.parametrize("service", SERVICES)
def test_a_new_image_tag_changes_that_service_alone(service: str) -> None:
    before = render("parley")
    after = render("parley", {service: {"image": {"tag": "9.9.9"}}})

    def by_name(rendered: Rendered) -> dict[tuple[str, str], Manifest]:
        return {(item["kind"], item["metadata"]["name"]): item for item in rendered}

    old, new = by_name(before), by_name(after)
    assert old.keys() == new.keys()
    changed = {key for key in old if old[key] != new[key]}
    expected = {("Deployment", f"parley-{service}")}
    if service in WITH_DATABASE:
        expected.add(("Job", f"parley-{service}-migrate"))
    assert changed == expected
    assert all(container(new[key])["image"] == f"parley-{service}:9.9.9" for key in changed)


def test_the_tag_falls_back_from_service_to_global_to_app_version() -> None:
    assert container(deployment(render("ingest"), "ingest"))["image"] == "parley-ingest:0.1.0"
    shared = {"global": {"image": {"registry": "r.example/p", "tag": "2.0.0"}}}
    image = container(deployment(render("ingest", shared), "ingest"))["image"]
    assert image == "r.example/p/parley-ingest:2.0.0"
    own = merged(shared, {"image": {"tag": "2.0.1"}})
    assert container(deployment(render("ingest", own), "ingest"))["image"].endswith(":2.0.1")
    digest = "sha256:" + "ab" * 32
    pinned = merged(own, {"image": {"digest": digest}})
    image = container(deployment(render("ingest", pinned), "ingest"))["image"]
    assert image == f"r.example/p/parley-ingest@{digest}"


def test_a_settings_change_rolls_the_pods_and_a_routes_change_does_not() -> None:
    def checksum(values: Values) -> str:
        pods = deployment(render("llm-router", values), "llm-router")
        return str(pods["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    routes = {"routes": {"default_model": "default"}}
    assert checksum(routes) != checksum(merged(routes, {"config": {"CACHE_TTL_SECONDS": "60"}}))
    # The router reloads its routes file itself: restarting the pods would cut streams.
    assert checksum(routes) == checksum({"routes": {"default_model": "fast"}})


def test_routes_are_mounted_as_a_directory_the_reload_sees() -> None:
    rendered = render("llm-router", production_values("llm-router"))
    routes_file = settings(rendered, "llm-router")["ROUTES_FILE"]
    pods = deployment(rendered, "llm-router")
    (mount,) = [m for m in container(pods)["volumeMounts"] if m["name"] == "routes"]
    # A subPath mount would keep the file the pod started with; a directory is updated.
    assert "subPath" not in mount
    folder, file_name = routes_file.rsplit("/", 1)
    assert mount["mountPath"] == folder
    (volume,) = [v for v in pods["spec"]["template"]["spec"]["volumes"] if v["name"] == "routes"]
    config_map = rendered.get("ConfigMap", volume["configMap"]["name"])
    assert file_name in config_map["data"]
    assert "models:" in config_map["data"][file_name]
    assert "ROUTES_FILE" not in settings(render("llm-router"), "llm-router")


@pytest.mark.parametrize("chart", ["parley", *SERVICES])
def test_no_secret_reaches_a_config_map(chart: str) -> None:
    # Production values with settings of every kind the schema admits in `config`.
    values = production_values(chart)
    extra = {"OPENAI_BASE_URL": "https://llm.example.com/v1", "AUTH_ISSUER": "https://id.example"}
    rendered = render(chart, merged(values, {"config": extra} if chart != "parley" else {}))
    assert rendered.kind("Secret") == [], "the charts never hold a secret"
    for config_map in rendered.kind("ConfigMap"):
        for key, value in config_map["data"].items():
            assert key not in SECRET_SETTINGS, key
            assert not re.search(r"(KEY|SECRET|PASSWORD|TOKEN)$", key), key
            assert not PASSWORD_IN_URL.search(value), key
            assert "sk-" not in value, key
    # Each secret a service needs comes from its Secret, by reference.
    for workload in rendered.kind("Deployment"):
        service = service_of(workload)
        secret = workload["spec"]["template"]["spec"]["containers"][0]["envFrom"][1]["secretRef"]
        assert secret["name"] == f"parley-{service}-env"
        required = {"gateway": "AUTH_SECRET", "retrieval": None}.get(service, "DATABASE_URL")
        if required:
            (variable,) = [v for v in container(workload)["env"] if v["name"] == required]
            reference = variable["valueFrom"]["secretKeyRef"]
            assert reference == {"name": secret["name"], "key": required}


def test_gateway_ingress_and_route_keep_event_streams_open() -> None:
    rendered = render("gateway", production_values("gateway"))
    stream_timeout = int(settings(rendered, "gateway")["STREAM_TIMEOUT_SECONDS"])
    ingress = rendered.get("Ingress", "parley-gateway")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > stream_timeout
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) > stream_timeout
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    service = rendered.get("Service", backend["name"])
    assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}
    route = rendered.get("HTTPRoute", "parley-gateway")
    (route_rule,) = route["spec"]["rules"]
    assert int(route_rule["timeouts"]["request"].removesuffix("s")) > stream_timeout
    (route_backend,) = route_rule["backendRefs"]
    assert route_backend["port"] in {port["port"] for port in service["spec"]["ports"]}
    # Both are optional, and only the gateway has them.
    assert render("gateway").kind("Ingress") == render("gateway").kind("HTTPRoute") == []
    everything = render("parley", production_values("parley"))
    assert {service_of(item) for item in everything.kind("Ingress")} == {"gateway"}


@pytest.mark.parametrize("service", SERVICES)
def test_service_monitor_scrapes_each_pod_once(service: str) -> None:
    assert render(service).kind("ServiceMonitor") == []
    rendered = render(service, production_values(service))
    monitor = rendered.get("ServiceMonitor", f"parley-{service}")
    (endpoint,) = monitor["spec"]["endpoints"]
    scraped = [
        item
        for item in rendered.kind("Service")
        if selects(monitor["spec"]["selector"]["matchLabels"], item["metadata"]["labels"])
        and endpoint["port"] in {port["name"] for port in item["spec"]["ports"]}
    ]
    assert [item["metadata"]["name"] for item in scraped] == [f"parley-{service}"]


def test_every_object_lives_in_the_release_namespace(platform: Rendered) -> None:
    assert {item["metadata"]["namespace"] for item in platform} == {NAMESPACE}

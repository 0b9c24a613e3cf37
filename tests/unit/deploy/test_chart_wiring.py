"""The rendered objects fit together: selectors select, names resolve, ports agree, probes and grace periods
follow the components' contracts, and the NetworkPolicies allow exactly client → router → box → worker/Redis.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from chart_render import (
    ALL_APIS,
    CHART,
    NAMESPACE,
    VALUE_FILES,
    Rendered,
    containers,
    flag,
    named_port,
    render,
    render_values,
)
from helm_python import HelmError

from api_box.config import Settings as BoxSettings
from api_box.core.auth import hash_key, parse_keys_file
from router.config import Settings as RouterSettings

COMPONENTS = ("router", "api-box", "worker")
FILE_IDS = [v or "defaults" for v in VALUE_FILES]


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = obj["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _workloads(r: Rendered) -> list[dict[str, Any]]:
    return r.of_kind("Deployment") + r.of_kind("StatefulSet")


def _selected(r: Rendered, selector: dict[str, str]) -> list[str]:
    return [w["metadata"]["name"] for w in _workloads(r) if _selects(selector, _labels(w))]


@pytest.fixture(params=VALUE_FILES, ids=FILE_IDS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return render(request.param, ALL_APIS)


def test_workload_selectors_match_their_own_pods_only(rendered: Rendered) -> None:
    for w in _workloads(rendered):
        assert _selected(rendered, w["spec"]["selector"]["matchLabels"]) == [w["metadata"]["name"]]


def test_every_service_selects_exactly_one_workload_with_the_ports_it_targets(rendered: Rendered) -> None:
    for svc in rendered.of_kind("Service"):
        (target,) = _selected(rendered, svc["spec"]["selector"])
        (container,) = containers(next(w for w in _workloads(rendered) if w["metadata"]["name"] == target))
        for port in svc["spec"]["ports"]:
            named_port(container, port["targetPort"])  # KeyError if the container has no such port


def test_pdbs_hpas_and_scaled_objects_point_at_real_workloads(rendered: Rendered) -> None:
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        assert len(_selected(rendered, pdb["spec"]["selector"]["matchLabels"])) == 1
    for scaler in rendered.of_kind("HorizontalPodAutoscaler") + rendered.of_kind("ScaledObject"):
        ref = scaler["spec"]["scaleTargetRef"]
        target = rendered.get(ref["kind"], ref["name"])
        assert "replicas" not in target["spec"], "an autoscaled workload must not pin its replica count"


def test_monitors_select_the_metrics_ports(rendered: Rendered) -> None:
    monitors = rendered.of_kind("ServiceMonitor")
    assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} == {"router", "api-box"}
    for monitor in monitors:
        services = [
            s
            for s in rendered.of_kind("Service")
            if _selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert services, monitor["metadata"]["name"]
        for svc in services:
            assert {"admin"} <= {p["name"] for p in svc["spec"]["ports"]}
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (pod_monitor,) = rendered.of_kind("PodMonitor")
    (worker,) = _selected(rendered, pod_monitor["spec"]["selector"]["matchLabels"])
    assert worker == rendered.workload("worker")["metadata"]["name"]
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_router_watches_the_api_box_headless_service_with_rbac(rendered: Rendered) -> None:
    router = rendered.workload("router")
    (container,) = containers(router)
    box = rendered.workload("api-box")
    svc = rendered.get("Service", flag(container, "k8s-service"))
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["metadata"]["name"] == box["spec"]["serviceName"]
    assert _selected(rendered, svc["spec"]["selector"]) == [box["metadata"]["name"]]
    assert {
        "name": "POD_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    } in container["env"]
    assert flag(container, "k8s-namespace") == "$(POD_NAMESPACE)"
    (role,) = rendered.of_kind("Role")
    assert role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    (binding,) = rendered.of_kind("RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = router["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]


def test_only_the_router_mounts_an_api_token(rendered: Rendered) -> None:
    for w in _workloads(rendered):
        pod = w["spec"]["template"]["spec"]
        if w is rendered.workload("router"):
            assert pod["serviceAccountName"]
        else:
            assert pod["automountServiceAccountToken"] is False


def test_container_ports_are_the_ports_the_processes_are_told(rendered: Rendered) -> None:
    (router,) = containers(rendered.workload("router"))
    assert int(flag(router, "port")) == named_port(router, "http")
    assert int(flag(router, "admin-port")) == named_port(router, "admin")
    (box,) = containers(rendered.workload("api-box"))
    assert int(flag(box, "port")) == named_port(box, "http")
    assert int(flag(box, "admin-port")) == named_port(box, "admin")
    (worker,) = containers(rendered.workload("worker"))
    assert int(flag(worker, "port")) == named_port(worker, "grpc")
    assert int(flag(worker, "metrics-port")) == named_port(worker, "metrics")
    for c in (router, box, worker):
        assert flag(c, "host") == "0.0.0.0"


def test_probes_hit_the_components_health_endpoints(rendered: Rendered) -> None:
    (router,) = containers(rendered.workload("router"))
    (box,) = containers(rendered.workload("api-box"))
    (worker,) = containers(rendered.workload("worker"))
    expected = {
        # router: /livez and /readyz on the admin port; api box: on its main port.
        id(router): ("admin", "/livez", "/readyz"),
        id(box): ("http", "/livez", "/readyz"),
    }
    for c in (router, box):
        port, live, ready = expected[id(c)]
        assert c["livenessProbe"]["httpGet"] == {"path": live, "port": port}
        assert c["startupProbe"]["httpGet"] == {"path": live, "port": port}
        assert c["readinessProbe"]["httpGet"] == {"path": ready, "port": port}
    grpc_port = int(flag(worker, "port"))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert worker[probe]["grpc"] == {"port": grpc_port}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _grace_and_prestop(workload: dict[str, Any]) -> tuple[int, int]:
    pod = workload["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    prestop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    return int(pod["terminationGracePeriodSeconds"]), int(prestop)


DRAIN_VARIABLES = {
    "router": "TETHER_ROUTER_DRAIN_TIMEOUT",
    "api-box": "TETHER_BOX_SHUTDOWN_GRACE_SECONDS",
    "worker": "TETHER_WORKER_DRAIN_SECONDS",
}


def test_grace_periods_cover_prestop_and_drain(rendered: Rendered) -> None:
    for component, variable in DRAIN_VARIABLES.items():
        workload = rendered.workload(component)
        grace, prestop = _grace_and_prestop(workload)
        drain = float(_env(containers(workload)[0])[variable])
        assert drain > 0
        assert grace >= prestop + drain, component
        if component != "worker":  # the router and the boxes leave their Service before SIGTERM
            assert prestop >= 1, component


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"apiBox": {"terminationGracePeriodSeconds": 20, "drain": {"budgetSeconds": 30}}}, "apiBox"),
        ({"router": {"terminationGracePeriodSeconds": 20, "drainSeconds": 30}}, "router"),
        ({"worker": {"terminationGracePeriodSeconds": 20, "drainSeconds": 30}}, "worker"),
    ],
)
def test_a_grace_period_shorter_than_the_drain_is_refused(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(HelmError, match=f"{key}.terminationGracePeriodSeconds"):
        render_values(overrides)


def test_a_longer_grace_period_override_is_used() -> None:
    ok = render_values({"apiBox": {"terminationGracePeriodSeconds": 90}})
    assert ok.workload("api-box")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 90


def test_api_box_dials_every_worker_by_its_stable_name(rendered: Rendered) -> None:
    (box,) = containers(rendered.workload("api-box"))
    worker = rendered.workload("worker")
    assert worker["kind"] == "StatefulSet"
    headless = rendered.get("Service", worker["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    port = named_port(containers(worker)[0], "grpc")
    name, service = worker["metadata"]["name"], headless["metadata"]["name"]
    assert flag(box, "workers").split(",") == [
        f"{name}-{i}.{service}.{NAMESPACE}.svc.cluster.local:{port}"
        for i in range(worker["spec"]["replicas"])
    ]


def test_api_box_reaches_redis_by_its_service_name(rendered: Rendered) -> None:
    (box,) = containers(rendered.workload("api-box"))
    env = {e["name"]: e for e in box["env"]}
    services = [
        s
        for s in rendered.of_kind("Service")
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"
    ]
    if not services:  # externalRedis from a Secret
        assert "secretKeyRef" in env["TETHER_BOX_REDIS_URL"]["valueFrom"]
        return
    (svc,) = [s for s in services if s["spec"].get("clusterIP") != "None"]
    (redis,) = containers(rendered.workload("redis"))
    port = svc["spec"]["ports"][0]
    assert named_port(redis, port["targetPort"]) == port["port"]
    assert env["TETHER_BOX_REDIS_URL"]["value"] == f"redis://{svc['metadata']['name']}:{port['port']}/0"


def test_api_box_gets_its_pod_name_as_box_id_and_the_keys_file(rendered: Rendered) -> None:
    box = rendered.workload("api-box")
    (c,) = containers(box)
    assert flag(c, "box-id") == "$(POD_NAME)"
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c["env"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "api-keys")
    volume = next(v for v in box["spec"]["template"]["spec"]["volumes"] if v["name"] == "api-keys")
    (item,) = volume["secret"]["items"]
    assert f"{mount['mountPath']}/{item['path']}" == flag(c, "api-keys-file")


def _keys_secret(rendered: Rendered) -> dict[str, Any]:
    return next(s for s in rendered.of_kind("Secret") if s["metadata"]["name"].endswith("-api-keys"))


def test_keys_secret_is_a_keys_file_the_api_box_reads() -> None:
    keys = [{"key": "k-aaaaaaaa", "tenant": "team-a"}, {"key": "sha256:" + "ab" * 32, "tenant": "team-b"}]
    secret = _keys_secret(render_values({"apiKeys": {"keys": keys}}))
    assert parse_keys_file(secret["stringData"]["keys"]) == {
        hash_key("k-aaaaaaaa"): "team-a",
        "ab" * 32: "team-b",
    }


def test_gpus_become_nvidia_limits_only_when_asked() -> None:
    (cpu,) = containers(render().workload("worker"))
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    gpu_chart = render("gpu-values.yaml")
    (gpu,) = containers(gpu_chart.workload("worker"))
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert flag(gpu, "engine") == "torch"
    (box,) = containers(gpu_chart.workload("api-box"))
    assert {"name": "TETHER_BOX_MODELS", "value": "tether-torch"} in box["env"]


def test_every_pod_meets_the_restricted_pod_security_standard(rendered: Rendered) -> None:
    pods = [w["spec"]["template"]["spec"] for w in _workloads(rendered)]
    pods += [p["spec"] for p in rendered.of_kind("Pod")]  # the helm test pod
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_keda_scales_the_api_boxes_on_a_box_gauge() -> None:
    (scaled,) = render("monitoring-values.yaml", ALL_APIS).of_kind("ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"].startswith("sum(tether_box_websocket_connections{")
    assert f'namespace="{NAMESPACE}"' in trigger["metadata"]["query"]
    assert scaled["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    assert not render("monitoring-values.yaml", ALL_APIS).of_kind("HorizontalPodAutoscaler")


def test_smoke_test_runs_the_repository_script_in_the_image() -> None:
    r = render()
    pod = next(p for p in r.of_kind("Pod") if p["metadata"]["annotations"]["helm.sh/hook"] == "test")
    (container,) = pod["spec"]["containers"]
    assert container["image"] == containers(r.workload("router"))[0]["image"]
    assert container["command"] == ["python", "/smoke/smoke_test.py"]
    (volume,) = pod["spec"]["volumes"]
    script = r.get("ConfigMap", volume["configMap"]["name"])
    assert script["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert script["data"]["smoke_test.py"] == (CHART / "files" / "smoke_test.py").read_text().rstrip("\n")


def test_smoke_test_goes_through_the_router_service() -> None:
    r = render()
    pod = next(p for p in r.of_kind("Pod") if p["metadata"]["annotations"]["helm.sh/hook"] == "test")
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    svc = r.get("Service", r.workload("router")["metadata"]["name"])
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "http")
    assert (
        env["TETHER_SMOKE_BASE_URL"]
        == f"http://{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{port}/v1"
    )
    assert env["TETHER_SMOKE_SESSION_HEADER"] == "session-id"  # the first header the router routes on
    tenants = parse_keys_file(_keys_secret(r)["stringData"]["keys"])
    assert hash_key(env["TETHER_SMOKE_API_KEY"]) in tenants


def _router_env(values: dict[str, Any]) -> dict[str, str]:
    (router,) = containers(render_values(values).workload("router"))
    return {e["name"]: e["value"] for e in router["env"] if "value" in e}


def _smoke_header(values: dict[str, Any]) -> str:
    r = render_values(values)
    pod = next(p for p in r.of_kind("Pod") if p["metadata"]["annotations"]["helm.sh/hook"] == "test")
    return next(
        e["value"] for e in pod["spec"]["containers"][0]["env"] if e["name"].endswith("SESSION_HEADER")
    )


def test_routing_keys_reach_the_router_in_order() -> None:
    chart = RouterSettings.from_env({**_router_env({}), "TETHER_ROUTER_BOXES": "a=h:1"})
    assert chart.key_sources() == RouterSettings(boxes="a=h:1").key_sources()  # the router's own default
    values = {"router": {"routingKeys": ["query:sid", "header:X-Tenant-Session"]}}
    custom = RouterSettings.from_env({**_router_env(values), "TETHER_ROUTER_BOXES": "a=h:1"})
    assert [str(spec) for spec in custom.key_sources()] == ["query:sid", "header:X-Tenant-Session"]
    assert _smoke_header(values) == "X-Tenant-Session"
    assert _smoke_header({"router": {"routingKeys": ["query:sid"]}}) == "X-Session-Id"


@pytest.mark.parametrize(
    "keys",
    [[], ["X-Session-Id"], ["cookie:sid"], ["header:bad name"], ["query:a=b"], ["header:a", "header:a"]],
)
def test_bad_routing_keys_fail_the_schema(keys: list[str]) -> None:
    with pytest.raises(HelmError, match="routingKeys"):
        render_values({"router": {"routingKeys": keys}})


# ---------------------------------------------------------------- NetworkPolicy graph


def _component_of_peer(r: Rendered, peer: dict[str, Any]) -> str:
    selector = peer["podSelector"]["matchLabels"]
    (name,) = _selected(r, selector)
    return next(
        w["metadata"]["labels"]["app.kubernetes.io/component"]
        for w in _workloads(r)
        if w["metadata"]["name"] == name
    )


def _port_name(r: Rendered, component: str, port: int | str) -> str:
    (c,) = containers(r.workload(component))
    if isinstance(port, str):
        named_port(c, port)
        return port
    return next(p["name"] for p in c["ports"] if p["containerPort"] == port)


def _allowed_ingress(r: Rendered) -> set[tuple[str, str, str]]:
    """(source component or '*', destination component, destination port name) the policies allow."""
    allowed = set()
    for policy in r.of_kind("NetworkPolicy"):
        (dst_name,) = _selected(r, policy["spec"]["podSelector"]["matchLabels"])
        dst = r.get(*next((w["kind"], dst_name) for w in _workloads(r) if w["metadata"]["name"] == dst_name))
        component = dst["metadata"]["labels"]["app.kubernetes.io/component"]
        for rule in policy["spec"].get("ingress", []):
            sources = [_component_of_peer(r, p) for p in rule.get("from", [])] or ["*"]
            for port in rule["ports"]:
                for src in sources:
                    allowed.add((src, component, _port_name(r, component, port["port"])))
    return allowed


def test_network_policies_allow_exactly_the_traffic_graph() -> None:
    r = render()
    assert _allowed_ingress(r) == {
        ("*", "router", "http"),
        ("router", "api-box", "http"),
        ("api-box", "worker", "grpc"),
        ("api-box", "redis", "redis"),
        # metrics/admin ports: any scraper (networkPolicy.metricsFrom narrows it)
        ("*", "router", "admin"),
        ("*", "api-box", "admin"),
        ("*", "worker", "metrics"),
    }
    policed = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in r.of_kind("NetworkPolicy")
    }
    assert policed == {"router", "api-box", "worker", "redis"}


def test_network_policies_restrict_box_egress_to_workers_redis_and_dns() -> None:
    r = render()
    box_policy = next(
        p
        for p in r.of_kind("NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api-box"
    )
    assert "Egress" in box_policy["spec"]["policyTypes"]
    destinations = {
        _component_of_peer(r, peer) for rule in box_policy["spec"]["egress"] for peer in rule.get("to", [])
    }
    assert destinations == {"worker", "redis"}
    open_rules = [rule["ports"] for rule in box_policy["spec"]["egress"] if "to" not in rule]
    assert open_rules == [[{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]]


def test_metrics_scrapers_can_be_narrowed() -> None:
    r = render("monitoring-values.yaml")
    for policy in r.of_kind("NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            if "from" not in rule:
                # only the router's client port stays open to everyone
                assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_the_store_false_sealed_handoff_can_be_turned_off_and_tuned() -> None:
    values = {"apiBox": {"sealedHandoff": {"enabled": False, "ttlSeconds": 30, "maxBytes": 1048576}}}
    (box,) = containers(render_values(values).workload("api-box"))
    env = {e["name"]: e.get("value") for e in box["env"]}
    assert env["TETHER_BOX_SEALED_HANDOFF"] == "0"
    assert env["TETHER_BOX_SEALED_HANDOFF_TTL_SECONDS"] == "30"
    assert env["TETHER_BOX_SEALED_HANDOFF_MAX_BYTES"] == "1048576"


def test_websocket_deflate_is_wired_to_the_box_settings() -> None:
    (box,) = containers(render_values({}).workload("api-box"))
    env = {e["name"]: e.get("value") for e in box["env"]}
    assert env["TETHER_BOX_WS_DEFLATE"] == "1"
    values = {
        "apiBox": {
            "websocketDeflate": {
                "enabled": True,
                "windowBits": 12,
                "contextTakeover": False,
                "maxConnectionBytes": 131072,
            }
        }
    }
    (box,) = containers(render_values(values).workload("api-box"))
    env = {e["name"]: e.get("value") for e in box["env"] if e["name"].startswith("TETHER_BOX_WS_DEFLATE")}
    settings = BoxSettings.from_env(env)
    assert settings.deflate is not None
    assert (settings.deflate.window_bits, settings.deflate.context_takeover) == (12, False)
    assert settings.deflate.max_connection_bytes == 131072
    with pytest.raises(HelmError, match="windowBits"):
        render_values(
            {"apiBox": {"websocketDeflate": {**values["apiBox"]["websocketDeflate"], "windowBits": 8}}}
        )


def test_worker_routing_is_wired_to_the_box_settings() -> None:
    (box,) = containers(render_values({}).workload("api-box"))
    env = {e["name"]: e["value"] for e in box["env"] if "value" in e}
    assert BoxSettings.from_env(env).worker_routing == "affinity"
    (box,) = containers(render_values({"apiBox": {"workerRouting": "round-robin"}}).workload("api-box"))
    env = {e["name"]: e.get("value") for e in box["env"] if e["name"] == "TETHER_BOX_WORKER_ROUTING"}
    assert BoxSettings.from_env(env).worker_routing == "round-robin"
    with pytest.raises(HelmError, match="workerRouting"):
        render_values({"apiBox": {"workerRouting": "random"}})


def test_the_boxes_share_a_compaction_key_from_a_secret() -> None:
    r = render()
    (box,) = containers(r.workload("api-box"))
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in box["env"] if e["name"] == "TETHER_BOX_COMPACTION_KEY"]
    secret = r.get("Secret", ref["name"])
    key = base64.b64decode(secret["data"][ref["key"]]).decode()
    assert BoxSettings(compaction_key=key).compaction_key == key  # base64 of 32 bytes
    theirs = render_values({"apiBox": {"compactionKey": {"existingSecret": "mine", "secretKey": "k"}}})
    (box,) = containers(theirs.workload("api-box"))
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in box["env"] if e["name"] == "TETHER_BOX_COMPACTION_KEY"]
    assert ref == {"name": "mine", "key": "k"}
    assert not [s for s in theirs.of_kind("Secret") if s["metadata"]["name"].endswith("-compaction-key")]

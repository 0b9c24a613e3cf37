"""The command lines a local cluster runs, derived from a ClusterSpec."""

from __future__ import annotations

from api_box.config import Settings
from tether.config import ClusterSpec
from tether.core.plan import (
    BOX_REDIS_URL_ENV,
    box_plan,
    compaction_key,
    readiness_url,
    redis_plan,
    router_plan,
    worker_plan,
)
from tether.core.serving import ServingLine


def _flag(args: tuple[str, ...], name: str) -> str:
    return args[args.index(name) + 1]


def test_workers_get_a_free_port_the_engine_and_the_speed() -> None:
    plan = worker_plan(ClusterSpec(speed=0, engine="torch"), 1)
    assert plan.name == "worker-1"
    assert plan.kind == "worker"
    assert [_flag(plan.args, f) for f in ("--port", "--metrics-port", "--engine", "--speed")] == [
        "0",
        "0",
        "torch",
        "0",
    ]
    assert _flag(worker_plan(ClusterSpec(speed=1.5), 0).args, "--speed") == "1.5"


def test_boxes_know_every_worker_their_id_the_key_and_redis() -> None:
    spec = ClusterSpec(port=8080, api_key="k1")
    plan = box_plan(spec, 1, ["127.0.0.1:5001", "127.0.0.1:5002"], "redis://127.0.0.1:7000/0")
    assert plan.name == "box-1"
    assert _flag(plan.args, "--workers") == "127.0.0.1:5001,127.0.0.1:5002"
    assert _flag(plan.args, "--box-id") == "box-1"
    assert _flag(plan.args, "--api-key") == "k1"
    assert _flag(plan.args, "--port") == "0"  # the router owns the base port
    assert dict(plan.env)[BOX_REDIS_URL_ENV] == "redis://127.0.0.1:7000/0"
    assert BOX_REDIS_URL_ENV not in dict(box_plan(spec, 0, ["w:1"], None).env)


def test_boxes_list_the_model_of_the_workers_engine_unless_the_environment_names_one() -> None:
    for engine in ("sim", "torch"):
        plan = box_plan(ClusterSpec(engine=engine), 0, ["w:1"], None)
        assert dict(plan.env_defaults)["TETHER_BOX_MODELS"] == f"tether-{engine}"
        assert "TETHER_BOX_MODELS" not in dict(plan.env)  # a default: the user's own setting wins


def test_without_a_router_box_zero_takes_the_base_port() -> None:
    spec = ClusterSpec(port=8080, router=False)
    assert _flag(box_plan(spec, 0, ["w:1"], None).args, "--port") == "8080"
    assert _flag(box_plan(spec, 1, ["w:1"], None).args, "--port") == "0"
    assert _flag(box_plan(spec, 0, ["w:1"], None, port=9001).args, "--port") == "9001"


def test_the_router_takes_the_base_port_and_names_its_members() -> None:
    plan = router_plan(ClusterSpec(port=8080), [("box-0", "127.0.0.1:1"), ("box-1", "127.0.0.1:2")])
    assert _flag(plan.args, "--port") == "8080"
    assert _flag(plan.args, "--boxes") == "box-0=127.0.0.1:1,box-1=127.0.0.1:2"


def test_redis_runs_in_memory_on_the_chosen_port() -> None:
    plan = redis_plan("127.0.0.1", 7001)
    assert (_flag(plan.args, "--port"), _flag(plan.args, "--bind")) == ("7001", "127.0.0.1")
    assert (_flag(plan.args, "--save"), _flag(plan.args, "--appendonly")) == ("", "no")


def test_services_log_in_the_launchers_format_and_drain_within_its_grace() -> None:
    spec = ClusterSpec(log_format="json", stop_timeout=15)
    plans = [worker_plan(spec, 0), box_plan(spec, 0, ["w:1"], None), router_plan(spec, [("box-0", "b:1")])]
    formats = [dict(p.env) for p in plans]
    assert formats[0]["TETHER_WORKER_LOG_FORMAT"] == "json"
    assert formats[1]["TETHER_BOX_LOG_FORMAT"] == "json"
    assert formats[2]["TETHER_ROUTER_LOG_FORMAT"] == "json"
    assert [dict(p.env_defaults) for p in plans] == [
        {"TETHER_WORKER_DRAIN_SECONDS": "10"},
        {
            "TETHER_BOX_SHUTDOWN_GRACE_SECONDS": "10",
            "TETHER_BOX_MODELS": "tether-sim",
            "TETHER_BOX_COMPACTION_KEY": compaction_key(spec),
        },
        {"TETHER_ROUTER_DRAIN_TIMEOUT": "10"},
    ]


def test_the_router_is_ready_on_its_admin_port_a_box_on_its_own() -> None:
    router = ServingLine("tether-router", "127.0.0.1", 8080, "http://127.0.0.1:9100/metrics")
    assert readiness_url("router", router) == "http://127.0.0.1:9100/readyz"
    assert readiness_url("router", ServingLine("tether-router", "127.0.0.1", 8080, None)).endswith(
        ":8080/readyz"
    )
    box = ServingLine("tether-api-box", "127.0.0.1", 8081, "http://127.0.0.1:9101/metrics")
    assert readiness_url("box", box) == "http://127.0.0.1:8081/readyz"


def test_boxes_get_the_clusters_worker_routing() -> None:
    assert _flag(box_plan(ClusterSpec(), 0, ["w:1"], None).args, "--worker-routing") == "affinity"
    spec = ClusterSpec(worker_routing="round-robin")
    assert _flag(box_plan(spec, 1, ["w:1", "w:2"], None).args, "--worker-routing") == "round-robin"


def test_every_box_gets_the_same_compaction_key_unless_the_environment_names_one() -> None:
    spec = ClusterSpec(api_key="k1")
    keys = {
        dict(box_plan(spec, i, ["w:1"], None).env_defaults)["TETHER_BOX_COMPACTION_KEY"] for i in range(3)
    }
    (key,) = keys
    assert Settings(compaction_key=key).compaction_key == key  # a valid key
    other = dict(box_plan(ClusterSpec(api_key="k2"), 0, ["w:1"], None).env_defaults)
    assert other["TETHER_BOX_COMPACTION_KEY"] != key

"""The benchmark's arms, KV regimes, capacity steps and its summary against the targets (pure parts)."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest.bench.arms import Arm, conversation_tokens, kv_budget, parse_arm, routings_of
from loadtest.bench.report import capacity, render, summarize, targets_table
from loadtest.bench.settings import BenchConfigError, BenchSettings


def test_arms_parse_and_name_themselves() -> None:
    assert parse_arm("ws:affinity") == Arm("ws", "affinity", deflate=True)
    assert parse_arm("ws:affinity:plain") == Arm("ws", "affinity", deflate=False)
    assert parse_arm(" http_full:round-robin ").name == "http_full:round-robin"
    assert parse_arm("ws:affinity:plain").label == "WebSocket + affinity (no deflate)"
    for bad, why in (
        ("ws", "not mode:routing"),
        ("ws:affinity:gzip", "not mode:routing"),
        ("grpc:affinity", "unknown mode"),
        ("ws:random", "unknown worker routing"),
        ("http_full:affinity:plain", "only WebSocket"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_arm(bad)
    arms = (parse_arm("http_full:round-robin"), parse_arm("ws:affinity"), parse_arm("ws:affinity:plain"))
    assert routings_of(arms) == ("affinity", "round-robin")


def test_the_bounded_budget_fits_affinity_but_not_a_copy_per_worker() -> None:
    conversation = conversation_tokens(30_000, 20, 4096)
    assert 50_000 < conversation < 60_000  # 30k first turn + 20 outputs of about 1k tokens each
    budget = kv_budget("bounded", agents=8, runs=2, workers=4, conversation=conversation, copies=2.5)
    assert budget >= 2.5 * 8 / 4 * conversation  # each worker: its share of the live conversations, 2.5 x
    assert budget < 8 * conversation  # but not every conversation, which round-robin would need
    assert kv_budget("bounded", agents=1, runs=1, workers=4, conversation=100, copies=1) == 200
    unbounded = kv_budget("unbounded", agents=8, runs=2, workers=4, conversation=conversation, copies=2.5)
    assert unbounded >= 8 * 3 * conversation  # every conversation of the job, on every worker
    with pytest.raises(ValueError, match="unknown KV regime"):
        kv_budget("huge", agents=1, runs=1, workers=1, conversation=1, copies=1)


def test_capacity_steps_double_past_the_given_levels_up_to_the_maximum() -> None:
    assert BenchSettings(capacity_levels=(1, 2, 4), capacity_max_agents=32).capacity_steps == (
        1,
        2,
        4,
        8,
        16,
        32,
    )
    assert BenchSettings(capacity_levels=(3,), capacity_max_agents=20).capacity_steps == (3, 6, 12)
    assert BenchSettings(capacity_levels=(1, 2), capacity_max_agents=2).capacity_steps == (1, 2)
    for bad in ({"arms": ("ws:affinity", "nope")}, {"kv_budgets": ("tiny",)}, {"think_seconds": -1.0}):
        with pytest.raises(BenchConfigError, match=next(iter(bad))):
            BenchSettings(**bad)


def _step(mode: str, routing: str, run_mean: float, up: int, cached: int, computed: int) -> dict[str, Any]:
    turns = [
        {"turn": i, "ttft": 0.1 * i, "seconds": 0.2, "up_payload": 1, "down_payload": 1, "up_wire": 1,
         "down_wire": 1, "input_tokens": 10, "error": None}
        for i in (1, 2, 3)
    ]  # fmt: skip
    return {
        "arm": {"mode": mode, "routing": routing, "deflate": True},
        "client": {"turns": 3, "errors": 0, "up_wire": up, "down_wire": 10, "up_payload": up,
                   "down_payload": 10, "socket_sent": up, "socket_received": 10},
        "metrics": {"worker_cache_hit_rate": cached / (cached + computed),
                    "worker_prefill_computed": computed, "box_worker_resends": 0,
                    "box_up_payload": up, "router_up_wire": up, "box_cpu_seconds": 0.003},
        "runs_summary": {"runs": 1, "failed_runs": 0, "run_mean": run_mean},
        "deflate": {"offered": mode == "ws", "negotiated": 1 if mode == "ws" else 0, "connections": 1},
        "agreement": {"up_payload": 1.0},
        "turns": turns,
    }  # fmt: skip


def _results() -> dict[str, Any]:
    steps = {
        "ws:affinity": _step("ws", "affinity", 10.0, 1_000, 90, 10),
        "http_full:round-robin": _step("http_full", "round-robin", 30.0, 100_000, 20, 80),
        "http_full:affinity": _step("http_full", "affinity", 11.0, 100_000, 85, 15),
    }
    settings = {"headline_tool_calls": 20, "first_turn_tokens": 30_000, "slo_ttft_ms": 500,
                "capacity_tokens": 100_000, "saturation_cores": 0.9, "concurrency": 1, "runs": 1,
                "output_bytes": 4096, "think_seconds": 0.5}  # fmt: skip
    cap = {
        "ws": [_cap(8, 200.0, 0.5, True), _cap(16, 380.0, 0.95, True)],
        "http_full": [_cap(8, 20.0, 0.7, True), _cap(16, 25.0, 1.0, False)],
    }
    machine = {"cpus": 2, "cpu_model": "x", "memory_gib": 1, "kernel": "k", "python": "3.11", "loadavg": []}
    return {
        "meta": {"settings": settings, "command": "tether bench", "started_utc": "t", "git": {},
                 "machine": machine},
        "arms": {"bounded": {"loopback": {"20": steps}}},
        "capacity": cap,
        "capacity_end": {"ws": "box core saturated (0.95 cores)", "http_full": "TTFT SLO broken"},
    }  # fmt: skip


def _cap(agents: int, rate: float, cores: float, ok: bool) -> dict[str, Any]:
    return {"agents": agents, "turns_per_second": rate, "box_cores": cores, "slo_met": ok,
            "turns_per_box_core_second": rate / cores, "box_cpu_ms_per_turn": cores / rate * 1000,
            "client": {"ttft_p99": 0.2}}  # fmt: skip


def test_summary_reads_the_targets_from_the_bounded_arms_and_the_saturated_capacity() -> None:
    results = _results()
    summary = summarize(results)
    assert (summary["regime"], summary["link"]) == ("bounded", "loopback")
    figures = summary["arms"]["bounded"]["loopback"]
    assert figures["ws:affinity"]["hit_rate"] == pytest.approx(0.9)
    assert figures["ws:affinity"]["ttft_first_mean"] == pytest.approx(0.1)
    assert figures["ws:affinity"]["ttft_later_p50"] == pytest.approx(0.25)
    run = summary["run_time"]["bounded"]["loopback"]
    assert run["vs_round_robin"] == pytest.approx(1 - 10 / 30)
    assert run["vs_affinity"] == pytest.approx(1 - 10 / 11)
    assert summary["upload"]["reduction"] == pytest.approx(0.99)
    assert summary["upload"]["http_arm"] == "http_full:affinity"
    cap = summary["capacity"]
    assert cap["ws"]["turns_per_second"] == 380.0  # the best SLO-meeting step
    assert cap["http_full"]["agents"] == 8
    assert cap["both_saturated"] is True
    assert cap["ratio_per_box_core"] == pytest.approx((380 / 0.95) / (20 / 0.7))
    table = "\n".join(targets_table(summary, results))
    assert "| 66.7% shorter (10.0 s against 30.0 s; worker cache hits 90.0% against 20.0%) | yes |" in table
    assert "99.0% less" in table
    assert "both to saturation) | yes |" in table
    report = render(results, summary, [])
    assert "| ws:affinity | 1 | 10.00 |" in report
    assert "- ws: the steps ended with box core saturated (0.95 cores)." in report


def test_capacity_that_never_saturated_is_not_called_met() -> None:
    results = _results()
    results["capacity_end"] = {"ws": "steps exhausted", "http_full": "TTFT SLO broken"}
    results["capacity"]["ws"] = [_cap(8, 200.0, 0.5, True)]
    cap = capacity(results)
    assert cap["ws"]["saturated"] is False
    assert cap["both_saturated"] is False
    table = "\n".join(targets_table(summarize(results), results))
    assert "NOT both measured to saturation) | not measured |" in table

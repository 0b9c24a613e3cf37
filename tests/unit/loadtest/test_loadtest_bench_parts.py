"""Pure parts of `tether bench` and the Locust run: link timing, metric deltas, figures, settings, rules."""

from __future__ import annotations

import math
from typing import Any

import pytest

from loadtest.bench.linkemu import Link, LinkSpec
from loadtest.bench.netns import unavailable
from loadtest.bench.scrape import Snapshot, kind_of, parse
from loadtest.bench.settings import SMOKE, BenchConfigError, BenchSettings
from loadtest.bench.stats import cumulative, per_turn_index, percentile, reduction, turn_summary
from loadtest.schedule import threshold_problems, users_at

BOX_BEFORE = """
# TYPE tether_box_bytes_total counter
tether_box_bytes_total{direction="client_to_server",mode="ws"} 100.0
tether_box_bytes_total{direction="server_to_client",mode="ws"} 1000.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.5
# TYPE tether_box_time_to_first_token_seconds histogram
tether_box_time_to_first_token_seconds_bucket{le="0.1",mode="ws"} 0.0
tether_box_time_to_first_token_seconds_bucket{le="0.5",mode="ws"} 0.0
tether_box_time_to_first_token_seconds_bucket{le="+Inf",mode="ws"} 0.0
tether_box_time_to_first_token_seconds_count{mode="ws"} 0.0
tether_box_time_to_first_token_seconds_sum{mode="ws"} 0.0
"""
BOX_AFTER = """
# TYPE tether_box_bytes_total counter
tether_box_bytes_total{direction="client_to_server",mode="ws"} 600.0
tether_box_bytes_total{direction="server_to_client",mode="ws"} 3000.0
tether_box_bytes_total{direction="client_to_server",mode="sse"} 50.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 2.0
# TYPE tether_box_time_to_first_token_seconds histogram
tether_box_time_to_first_token_seconds_bucket{le="0.1",mode="ws"} 50.0
tether_box_time_to_first_token_seconds_bucket{le="0.5",mode="ws"} 99.0
tether_box_time_to_first_token_seconds_bucket{le="+Inf",mode="ws"} 100.0
tether_box_time_to_first_token_seconds_count{mode="ws"} 100.0
tether_box_time_to_first_token_seconds_sum{mode="ws"} 12.0
"""
ROUTER = """
# TYPE tether_router_bytes_total counter
tether_router_bytes_total{direction="client_to_server",mode="ws"} 700.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 9.0
"""


def snapshot(at: float, box: str, router: str) -> Snapshot:
    samples = {**parse("box-0", box), **parse("router", router)}
    return Snapshot(at, samples, {"box-0": "box", "router": "router"})


def test_metric_deltas_per_kind_and_direction() -> None:
    delta = snapshot(5.0, BOX_AFTER, ROUTER).minus(snapshot(1.0, BOX_BEFORE, ROUTER))
    assert delta.seconds == 4.0
    assert delta.box_bytes("client_to_server") == 550.0  # ws and sse together
    assert delta.box_bytes("server_to_client") == 2000.0
    assert delta.router_bytes("client_to_server") == 0.0  # unchanged
    assert delta.cpu_seconds("box") == pytest.approx(0.5)
    assert delta.cpu_seconds("router") == 0.0


def test_ttft_histogram_delta_gives_the_exact_share_at_a_bucket_bound_and_quantiles() -> None:
    ttft = snapshot(2, BOX_AFTER, "").minus(snapshot(1, BOX_BEFORE, "")).ttft()
    assert ttft.count == 100
    assert ttft.mean == pytest.approx(0.12)
    assert ttft.fraction_at_most(0.5) == pytest.approx(0.99)
    assert ttft.fraction_at_most(0.3) is None  # not a bucket bound
    assert ttft.quantile(0.5) == pytest.approx(0.1)
    assert 0.1 < (ttft.quantile(0.9) or 0) < 0.5


def test_targets_are_recognised_by_their_metric_names() -> None:
    assert kind_of(parse("a", BOX_BEFORE)) == "box"
    assert kind_of(parse("b", ROUTER)) == "router"
    assert kind_of(parse("c", "# TYPE x counter\nx_total 1\n")) is None


def test_link_paces_at_the_rate_then_adds_the_delay() -> None:
    link = Link(LinkSpec(delay=0.010, rate=1000.0))  # 1000 B/s
    assert link.schedule(100, now=0.0) == pytest.approx(0.110)  # 0.1 s on the wire + 10 ms
    assert link.schedule(100, now=0.0) == pytest.approx(0.210)  # queued behind the first slice
    assert link.schedule(100, now=5.0) == pytest.approx(5.110)  # an idle link starts at once
    unlimited = Link(LinkSpec(delay=0.0, rate=0.0))
    assert unlimited.schedule(10**9, now=3.0) == 3.0
    assert link.bytes == 300


def test_link_spec_bounds() -> None:
    with pytest.raises(ValueError, match="delay"):
        LinkSpec(delay=-1.0)
    with pytest.raises(ValueError, match="rate"):
        LinkSpec(rate=-1.0)


def test_percentiles_and_reductions() -> None:
    assert percentile([], 0.5) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([5.0], 0.99) == 5.0
    assert reduction(10.0, 100.0) == pytest.approx(0.9)
    assert reduction(None, 1.0) is None
    assert reduction(1.0, 0.0) is None


def turn(index: int, up: int, ttft: float | None = 0.1, error: str | None = None) -> dict[str, Any]:
    return {
        "turn": index, "ttft": ttft, "seconds": 0.2, "up_payload": up, "down_payload": 2 * up,
        "up_wire": up + 10, "down_wire": 2 * up + 10, "input_tokens": 100 * index, "error": error,
    }  # fmt: skip


def test_turn_summary_counts_errors_and_bytes() -> None:
    turns = [turn(1, 100), turn(2, 200), turn(3, 0, None, "boom")]
    summary = turn_summary(turns)
    assert (summary["turns"], summary["errors"]) == (2, 1)
    assert summary["up_payload"] == 300
    assert summary["up_wire"] == 330
    assert summary["ttft_p50"] == pytest.approx(0.1)
    assert per_turn_index(turns, "up_wire") == [(1, 110.0), (2, 210.0)]
    assert cumulative([(1, 1.0), (2, 2.0)]) == [(1, 1.0), (2, 3.0)]


def test_settings_from_the_environment_with_flags_on_top() -> None:
    env = {"TETHER_BENCH_CONCURRENCY": "8", "TETHER_BENCH_TOOL_CALLS": "1,20", "TETHER_BENCH_PIN": "no"}
    settings = BenchSettings.from_env(env)
    assert (settings.concurrency, settings.tool_calls, settings.pin) == (8, (1, 20), False)
    assert settings.replace(concurrency=None, runs=3).runs == 3
    assert settings.sweep == (1, 20)
    assert settings.starts_cluster
    assert BenchSettings().replace(**SMOKE).deadline == SMOKE["deadline"]


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"TETHER_BENCH_CONCURRENCY": "many"}, "TETHER_BENCH_CONCURRENCY"),
        ({"TETHER_BENCH_CONCURRENCY": "0"}, "concurrency"),
        ({"TETHER_BENCH_MODES": "ws,grpc"}, "modes"),
        ({"TETHER_BENCH_LINKS": "wifi"}, "links"),
        ({"TETHER_BENCH_BASE_URL": "ftp://x"}, "base_url"),
        ({"TETHER_BENCH_TOOL_CALLS": "99"}, "tool_calls"),
    ],
)
def test_bad_settings_fail_loudly(env: dict[str, str], match: str) -> None:
    with pytest.raises(BenchConfigError, match=match):
        BenchSettings.from_env(env)


def test_unknown_fields_are_config_errors() -> None:
    with pytest.raises(BenchConfigError):
        BenchSettings().replace(colour="blue")


def test_ramp_soak_and_steady_shapes() -> None:
    assert users_at("steady", 1e6, 10, 60, 5, 60) == 10
    assert [users_at("ramp", t, 10, 50, 5, 0) for t in (0, 9.9, 10, 49.9, 50)] == [2, 2, 4, 10, None]
    assert [users_at("soak", t, 10, 10, 1, 30) for t in (0, 5, 10, 39.9, 40)] == [1, 5, 10, 10, None]
    with pytest.raises(ValueError, match="unknown shape"):
        users_at("spike", 0, 1, 1, 1, 1)


def test_threshold_rule() -> None:
    assert threshold_problems(100, 1, 200.0, 0.01, 1000.0) == []
    assert "failed" in threshold_problems(100, 2, 200.0, 0.01, 1000.0)[0]
    assert "p95" in threshold_problems(100, 0, 1500.0, 0.01, 1000.0)[0]
    assert threshold_problems(0, 0, None, 0.01, 1000.0) == ["no turn completed or failed"]
    assert threshold_problems(10, 0, None, 0.01, 1000.0) == []


def test_shaped_link_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    reason = unavailable()
    assert reason is not None
    assert "root" in reason
    assert not math.isnan(0.0)

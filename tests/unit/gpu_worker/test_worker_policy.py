"""Worker selection policies (gpu_worker/client/policy.py): affinity, round-robin, least-loaded."""

from __future__ import annotations

from collections import Counter

import pytest

from gpu_worker.client import ROUTINGS, check_routing
from gpu_worker.client.policy import WorkerSelector
from gpu_worker.client.rendezvous import rank

WORKERS = ("w0:1", "w1:1", "w2:1", "w3:1")


def test_routing_names_are_checked() -> None:
    assert ROUTINGS == ("affinity", "round-robin", "least-loaded")
    assert check_routing("round-robin") == "round-robin"
    with pytest.raises(ValueError, match="affinity, round-robin, least-loaded"):
        check_routing("random")
    with pytest.raises(ValueError, match="unknown worker routing 'roundrobin'"):
        WorkerSelector("roundrobin")


def test_affinity_is_the_rendezvous_order_of_the_key_on_every_call() -> None:
    selector = WorkerSelector()
    assert selector.routing == "affinity"
    orders = [selector.order("chain-7", WORKERS) for _ in range(5)]
    assert orders == [rank("chain-7", WORKERS)] * 5
    assert selector.order("chain-7", WORKERS) == selector.affinity_order("chain-7", WORKERS)


def test_round_robin_rotates_over_the_workers_whatever_the_key() -> None:
    selector = WorkerSelector("round-robin")
    picks = [selector.order("same-key", WORKERS)[0] for _ in range(8)]
    assert picks == [*WORKERS, *WORKERS]
    order = selector.order("same-key", WORKERS)  # the ninth call: w0 first, then the rest in turn
    assert order == list(WORKERS)


def test_round_robin_skips_workers_marked_down_and_tries_them_last() -> None:
    selector = WorkerSelector("round-robin")
    orders = [selector.order("k", WORKERS, down={"w1:1"}) for _ in range(4)]
    assert [o[0] for o in orders] == ["w0:1", "w2:1", "w2:1", "w3:1"]
    assert all(o[-1] == "w1:1" and sorted(o) == sorted(WORKERS) for o in orders)


def test_least_loaded_picks_the_fewest_in_flight_and_rotates_ties() -> None:
    selector = WorkerSelector("least-loaded")
    loads = {"w0:1": 3, "w1:1": 1, "w2:1": 1, "w3:1": 2}
    first = selector.order("k", WORKERS, in_flight=loads)
    assert first == ["w1:1", "w2:1", "w3:1", "w0:1"]  # by load, ties in turn order from w0
    assert selector.order("k", WORKERS, in_flight=loads)[:2] == ["w1:1", "w2:1"]  # the turn starts at w1
    assert selector.order("k", WORKERS, in_flight=loads)[:2] == ["w2:1", "w1:1"]  # at w2: it leads the tie
    idle = Counter(selector.order(f"k{i}", WORKERS)[0] for i in range(400))
    assert set(idle.values()) == {100}  # no load at all: it spreads like round-robin
    assert selector.order("k", WORKERS, in_flight={"w0:1": 0}, down={"w1:1", "w2:1"})[-2:] == [
        "w1:1",
        "w2:1",
    ]


def test_every_policy_orders_each_serving_worker_once() -> None:
    for routing in ROUTINGS:
        selector = WorkerSelector(routing)
        for i in range(20):
            order = selector.order(f"key-{i}", WORKERS, down={"w3:1"}, in_flight={"w2:1": i % 3})
            assert sorted(order) == sorted(WORKERS)
            assert order[-1] == "w3:1"
        assert selector.order("k", ()) == []

"""`tether` argument parsing: flags override the environment; bad values exit with status 2."""

from __future__ import annotations

import importlib.util

import pytest

from tether.cli import build_parser, main, spec_from_args
from tether.config import ClusterSpec


def _spec(argv: list[str], env: dict[str, str] | None = None) -> ClusterSpec:
    return spec_from_args(build_parser().parse_args(["up", *argv]), env or {})


def test_no_flags_give_the_documented_defaults() -> None:
    spec = _spec([])
    assert (spec.port, spec.boxes, spec.workers, spec.router, spec.redis, spec.engine, spec.speed) == (
        8080,
        2,
        2,
        True,
        "auto",
        "sim",
        1.0,
    )


def test_flags_override_the_environment() -> None:
    env = {"TETHER_UP_BOXES": "4", "TETHER_UP_SPEED": "2", "TETHER_UP_REDIS": "off"}
    spec = _spec(["--boxes", "1", "--port", "0", "--redis-url", "redis://127.0.0.1:7000/0"], env)
    assert (spec.boxes, spec.speed, spec.port, spec.redis) == (1, 2.0, 0, "redis://127.0.0.1:7000/0")


def test_worker_routing_from_the_flag_or_the_environment() -> None:
    assert _spec([]).worker_routing == "affinity"
    env = {"TETHER_UP_WORKER_ROUTING": "least-loaded"}
    assert _spec([], env).worker_routing == "least-loaded"
    assert _spec(["--worker-routing", "round-robin"], env).worker_routing == "round-robin"


def test_no_redis_and_no_router() -> None:
    spec = _spec(["--no-redis", "--no-router", "--api-key", "k", "--log-format", "json"])
    assert (spec.redis, spec.router, spec.api_key, spec.log_format) == (None, False, "k", "json")


@pytest.mark.parametrize(
    "argv",
    [
        ["up", "--boxes", "0"],
        ["up", "--port", "-1"],
        ["up", "--speed", "-2"],
        ["up", "--engine", "vllm"],
        ["up", "--worker-routing", "random"],
        ["up", "--demo-tool-calls", "65"],
        ["up", "--no-redis", "--redis-url", "redis://127.0.0.1:1/0"],
        ["frobnicate"],
        [],
    ],
)
def test_bad_invocations_exit_with_status_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "error" in capsys.readouterr().err


def test_the_demo_without_the_sdk_exits_2_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openai" else real(name, *a)
    )
    with pytest.raises(SystemExit) as caught:
        main(["up", "--demo"])
    assert caught.value.code == 2
    assert "pip install 'tether[demo]'" in capsys.readouterr().err

"""`tether bench` flags over TETHER_BENCH_* variables (parsing only: nothing runs)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from loadtest.bench.cli import add_parser, settings_from_args
from loadtest.bench.settings import SMOKE, BenchConfigError, BenchSettings
from tether.cli import build_parser


def test_flags_override_the_environment_and_the_smoke_preset() -> None:
    args = build_parser().parse_args(
        ["bench", "--smoke", "-c", "3", "--modes", "ws,http_full", "--tool-calls", "1,4", "--no-pin"]
    )
    settings = settings_from_args(args, {"TETHER_BENCH_CONCURRENCY": "9", "TETHER_BENCH_RTT_MS": "40"})
    assert settings.concurrency == 3  # the flag beats the variable
    assert settings.rtt_ms == 40.0  # the variable beats the default
    assert settings.modes == ("ws", "http_full")
    assert settings.tool_calls == (1, 4)
    assert settings.pin is False
    assert settings.deadline == SMOKE["deadline"]


def test_metrics_urls_repeat() -> None:
    args = build_parser().parse_args(
        [
            "bench",
            "--base-url",
            "http://h:1/v1",
            "--metrics",
            "http://h:2/metrics",
            "--metrics",
            "http://h:3/metrics",
        ]
    )
    settings = settings_from_args(args, {})
    assert settings.metrics == ("http://h:2/metrics", "http://h:3/metrics")
    assert not settings.starts_cluster


def test_a_bad_flag_value_is_a_config_error() -> None:
    args = build_parser().parse_args(["bench", "--links", "wifi"])
    with pytest.raises(BenchConfigError, match="links"):
        settings_from_args(args, {})


def test_every_setting_has_a_flag_whose_help_shows_its_default_and_variable() -> None:
    bench = add_parser(argparse.ArgumentParser().add_subparsers())
    by_dest = {action.dest: action for action in bench._actions}
    for field in dataclasses.fields(BenchSettings):
        action = by_dest[field.name]
        assert f"TETHER_BENCH_{field.name.upper()}" in (action.help or "")
    assert by_dest["concurrency"].option_strings == ["-c", "--concurrency"]
    assert "(default 8;" in (by_dest["concurrency"].help or "")
    assert "(default 5,10,20;" in (by_dest["tool_calls"].help or "")
    assert "(default ws:affinity,ws:affinity:plain,http_full:round-robin," in (by_dest["arms"].help or "")
    assert by_dest["pin"].option_strings == ["--no-pin"]


def test_arms_and_kv_regimes_come_from_flags() -> None:
    argv = ["bench", "--arms", "ws:affinity,http_full:round-robin", "--kv-budgets", "bounded"]
    settings = settings_from_args(build_parser().parse_args([*argv, "--think-seconds", "2"]), {})
    assert [a.name for a in settings.arm_list] == ["ws:affinity", "http_full:round-robin"]
    assert (settings.kv_budgets, settings.think_seconds) == (("bounded",), 2.0)
    with pytest.raises(BenchConfigError, match="arms"):
        settings_from_args(build_parser().parse_args(["bench", "--arms", "ws:random"]), {})


def test_flags_convert_like_the_variables_and_name_the_flag() -> None:
    args = build_parser().parse_args(
        ["bench", "--boxes", "2", "--speed", "0.5", "--no-plots", "--no-capacity"]
    )
    settings = settings_from_args(args, {})
    assert (settings.boxes, settings.speed, settings.plots, settings.capacity) == (2, 0.5, False, False)
    with pytest.raises(BenchConfigError, match="--boxes"):
        settings_from_args(build_parser().parse_args(["bench", "--boxes", "two"]), {})


def test_an_empty_arms_variable_runs_no_arms_and_other_empty_variables_are_unset() -> None:
    settings = BenchSettings.from_env(
        {"TETHER_BENCH_ARMS": "", "TETHER_BENCH_BOXES": "", "TETHER_BENCH_PLOTS": ""}
    )
    assert settings.arms == ()
    assert (settings.boxes, settings.plots) == (BenchSettings().boxes, True)
    with pytest.raises(BenchConfigError, match="TETHER_BENCH_BOXES='two' is not a valid int"):
        BenchSettings.from_env({"TETHER_BENCH_BOXES": "two"})

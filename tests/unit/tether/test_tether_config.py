"""ClusterSpec: defaults, the TETHER_UP_* environment, overrides, and loud failures on bad values."""

from __future__ import annotations

import pytest

from tether.config import CLI_DEFAULT_PORT, DEV_API_KEY, ClusterSpec
from tether.errors import ConfigError, exit_status


def test_the_python_api_defaults_to_a_free_port_and_the_dev_key() -> None:
    spec = ClusterSpec()
    assert (spec.port, spec.api_key, spec.boxes, spec.workers, spec.router, spec.redis) == (
        0,
        DEV_API_KEY,
        2,
        2,
        True,
        "auto",
    )


def test_the_environment_defaults_to_the_cli_port() -> None:
    assert ClusterSpec.from_env({}).port == CLI_DEFAULT_PORT


def test_environment_values_are_converted() -> None:
    env = {
        "TETHER_UP_BOXES": "3",
        "TETHER_UP_SPEED": "0.5",
        "TETHER_UP_ROUTER": "off",
        "TETHER_UP_REDIS_URL": "redis://10.0.0.1:6379/0",
        "TETHER_UP_LOG_FORMAT": "json",
        "TETHER_UNRELATED": "ignored",
    }
    spec = ClusterSpec.from_env(env)
    assert (spec.boxes, spec.speed, spec.router, spec.redis, spec.log_format) == (
        3,
        0.5,
        False,
        "redis://10.0.0.1:6379/0",
        "json",
    )


def test_redis_can_be_switched_off_from_the_environment() -> None:
    assert ClusterSpec.from_env({"TETHER_UP_REDIS": "off"}).redis is None


def test_overrides_win_over_the_environment() -> None:
    spec = ClusterSpec.from_env({"TETHER_UP_BOXES": "3", "TETHER_UP_PORT": "9000"}, boxes=1, redis=None)
    assert (spec.boxes, spec.port, spec.redis) == (1, 9000, None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TETHER_UP_BOXES": "two"}, "TETHER_UP_BOXES"),
        ({"TETHER_UP_ROUTER": "maybe"}, "TETHER_UP_ROUTER"),
        ({"TETHER_UP_SPEED": "fast"}, "TETHER_UP_SPEED"),
        ({"TETHER_UP_BOXES": "0"}, "boxes"),
        ({"TETHER_UP_WORKERS": "65"}, "workers"),
        ({"TETHER_UP_PORT": "70000"}, "port"),
        ({"TETHER_UP_SPEED": "-1"}, "speed"),
        ({"TETHER_UP_SPEED": "nan"}, "speed"),
        ({"TETHER_UP_ENGINE": "vllm"}, "engine"),
        ({"TETHER_UP_WORKER_ROUTING": "random"}, "worker_routing"),
        ({"TETHER_UP_LOG_FORMAT": "xml"}, "log_format"),
        ({"TETHER_UP_REDIS_URL": "http://localhost"}, "redis"),
        ({"TETHER_UP_API_KEY": "two words"}, "api_key"),
        ({"TETHER_UP_HOST": "has space"}, "host"),
        ({"TETHER_UP_START_TIMEOUT": "0"}, "start_timeout"),
    ],
)
def test_bad_values_fail_loudly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        ClusterSpec.from_env(env)
    assert exit_status(caught.value) == 2


def test_an_unknown_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        ClusterSpec.from_env({}, colour="blue")


def test_the_api_key_is_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        ClusterSpec(api_key="secret key")
    assert "secret" not in str(caught.value)


def test_unexpected_errors_exit_with_status_one() -> None:
    assert exit_status(RuntimeError("boom")) == 1


def test_an_empty_variable_is_unset() -> None:
    spec = ClusterSpec.from_env({"TETHER_UP_HOST": "", "TETHER_UP_REDIS": " ", "TETHER_UP_BOXES": ""})
    assert (spec.host, spec.redis, spec.boxes) == ("127.0.0.1", "auto", 2)

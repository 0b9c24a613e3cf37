"""Router settings from the environment and flags."""

from __future__ import annotations

import pytest

from router.config import Settings
from router.core.errors import ConfigError


def test_defaults_with_a_static_source() -> None:
    settings = Settings.from_env({"TETHER_ROUTER_BOXES": "a=127.0.0.1:1"})
    assert (settings.port, settings.admin_port, settings.session_header) == (8080, 9090, "X-Session-Id")
    assert settings.bounded_load is None
    assert [m.name for m in settings.static_members()] == ["a"]


def test_environment_then_flags() -> None:
    env = {
        "TETHER_ROUTER_BOXES": "a=127.0.0.1:1",
        "TETHER_ROUTER_PORT": "0",
        "TETHER_ROUTER_ADMIN_PORT": "-1",
        "TETHER_ROUTER_BOUNDED_LOAD": "1.25",
        "TETHER_ROUTER_SESSION_HEADER": "X-Agent-Session",
        "TETHER_ROUTER_LOG_FORMAT": "json",
    }
    settings = Settings.from_env(env, port=7000, bounded_load=None, host=None)
    assert (settings.port, settings.admin_port, settings.bounded_load) == (7000, -1, 1.25)
    assert (settings.session_header, settings.log_format) == ("X-Agent-Session", "json")
    assert Settings.from_env({**env, "TETHER_ROUTER_BOUNDED_LOAD": "off"}).bounded_load is None


def test_a_source_flag_replaces_the_environment_source() -> None:
    env = {"TETHER_ROUTER_BOXES": "a=127.0.0.1:1"}
    settings = Settings.from_env(env, dns="api-box-headless:8080")
    assert (settings.boxes, settings.dns) == (None, "api-box-headless:8080")


@pytest.mark.parametrize(
    "env",
    [
        {},  # no source
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_DNS": "h:1"},  # two sources
        {"TETHER_ROUTER_BOXES": "nonsense"},
        {"TETHER_ROUTER_DNS": "no-port"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_PORT": "x"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_PORT": "70000"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_ADMIN_PORT": "-2"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_BOUNDED_LOAD": "1.0"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_HEAD_TIMEOUT": "0"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_CONNECT_TIMEOUT": "nan"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_SESSION_HEADER": "bad header"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_LOG_FORMAT": "xml"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_MAX_HEAD_BYTES": "10"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_HOST": "has space"},
    ],
)
def test_bad_values_fail_loudly(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_unknown_override_fails() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"TETHER_ROUTER_BOXES": "a=h:1"}, colour="blue")

"""Router settings from the environment and flags."""

from __future__ import annotations

import pytest

from router.config import Settings
from router.core.errors import ConfigError
from router.core.head import KeySpec


def test_defaults_with_a_static_source() -> None:
    settings = Settings.from_env({"TETHER_ROUTER_BOXES": "a=127.0.0.1:1"})
    assert (settings.port, settings.admin_port) == (8080, 9090)
    assert [str(spec) for spec in settings.key_sources()] == [
        "header:session-id",
        "header:session_id",
        "header:x-session-affinity",
        "header:x-claude-code-session-id",
        "header:X-Session-Id",
        "query:session_id",
    ]
    assert settings.bounded_load is None
    assert [m.name for m in settings.static_members()] == ["a"]


def test_environment_then_flags() -> None:
    env = {
        "TETHER_ROUTER_BOXES": "a=127.0.0.1:1",
        "TETHER_ROUTER_PORT": "0",
        "TETHER_ROUTER_ADMIN_PORT": "-1",
        "TETHER_ROUTER_BOUNDED_LOAD": "1.25",
        "TETHER_ROUTER_ROUTING_KEYS": "header:X-Agent-Session, query:sid",
        "TETHER_ROUTER_LOG_FORMAT": "json",
    }
    settings = Settings.from_env(env, port=7000, bounded_load=None, host=None)
    assert (settings.port, settings.admin_port, settings.bounded_load) == (7000, -1, 1.25)
    assert settings.key_sources() == (KeySpec("header", "X-Agent-Session"), KeySpec("query", "sid"))
    assert settings.log_format == "json"
    flagged = Settings.from_env(env, routing_keys="header:session_id")
    assert flagged.key_sources() == (KeySpec("header", "session_id"),)
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
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_ROUTING_KEYS": "header:bad header"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_ROUTING_KEYS": "X-Session-Id"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_SESSION_HEADER": "X-Session-Id"},  # replaced
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_SESSION_QUERY": "session_id"},  # replaced
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_LOG_FORMAT": "xml"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_MAX_HEAD_BYTES": "10"},
        {"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_HOST": "has space"},
    ],
)
def test_bad_values_fail_loudly(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_a_replaced_variable_names_its_replacement() -> None:
    with pytest.raises(ConfigError, match="TETHER_ROUTER_ROUTING_KEYS"):
        Settings.from_env({"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_SESSION_HEADER": "X-A"})
    with pytest.raises(ConfigError, match="TETHER_ROUTER_ROUTING_KEYS='cookie:a'"):
        Settings.from_env({"TETHER_ROUTER_BOXES": "a=h:1", "TETHER_ROUTER_ROUTING_KEYS": "cookie:a"})


def test_unknown_override_fails() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"TETHER_ROUTER_BOXES": "a=h:1"}, colour="blue")

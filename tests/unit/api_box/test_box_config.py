"""Settings from the environment, command-line flags on top, loud failures."""

from __future__ import annotations

import pytest

from api_box.__main__ import settings_from
from api_box.config import Settings


def test_defaults_are_valid() -> None:
    s = Settings()
    assert s.port == 8080
    assert s.connection_max_seconds == 3600.0
    assert s.workers == ("127.0.0.1:50051",)
    assert s.limits.max_json_depth == s.max_json_depth
    assert s.default_temperature == 1.0  # the API's default


def test_the_default_temperature_comes_from_the_environment() -> None:
    assert Settings.from_env({"TETHER_BOX_DEFAULT_TEMPERATURE": "0"}).default_temperature == 0.0
    assert Settings.from_env({"TETHER_BOX_DEFAULT_TEMPERATURE": "0.2"}).default_temperature == 0.2


def test_environment_is_read_with_types() -> None:
    s = Settings.from_env(
        {
            "TETHER_BOX_PORT": "9000",
            "TETHER_BOX_WORKERS": "a:1, b:2",
            "TETHER_BOX_DEV": "yes",
            "TETHER_BOX_CONNECTION_MAX_SECONDS": "1.5",
            "TETHER_BOX_BOX_ID": "box-7",
            "UNRELATED": "x",
        }
    )
    assert (s.port, s.workers, s.dev, s.connection_max_seconds, s.box_id) == (
        9000,
        ("a:1", "b:2"),
        True,
        1.5,
        "box-7",
    )


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"TETHER_BOX_PORT": "eighty"}, "TETHER_BOX_PORT"),
        ({"TETHER_BOX_DEV": "maybe"}, "TETHER_BOX_DEV"),
        ({"TETHER_BOX_PORT": "70000"}, "port"),
        ({"TETHER_BOX_WORKERS": "nohost"}, "workers"),
        ({"TETHER_BOX_LOG_FORMAT": "xml"}, "log_format"),
        ({"TETHER_BOX_SESSION_STORE_BYTES": "0"}, "session_store_bytes"),
        ({"TETHER_BOX_DEFAULT_TEMPERATURE": "2.5"}, "default_temperature"),
        ({"TETHER_BOX_DEFAULT_TEMPERATURE": "-0.1"}, "default_temperature"),
        ({"TETHER_BOX_DEFAULT_TEMPERATURE": "nan"}, "default_temperature"),
    ],
)
def test_bad_values_fail_loudly_naming_the_setting(env: dict[str, str], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env(env)


def test_flags_override_the_environment() -> None:
    s = settings_from(
        ["--port", "0", "--admin-port", "-1", "--workers", "h:1,h:2", "--api-key", "k1", "--api-key", "k2",
         "--dev", "--box-id", "b", "--connection-max-seconds", "5", "--log-format", "json"],
        {"TETHER_BOX_PORT": "9000", "TETHER_BOX_BOX_ID": "env-box"},
    )  # fmt: skip
    assert (s.port, s.admin_port, s.workers, s.api_keys, s.dev, s.box_id) == (
        0,
        -1,
        ("h:1", "h:2"),
        ("k1", "k2"),
        True,
        "b",
    )
    assert s.connection_max_seconds == 5.0
    assert s.log_format == "json"
    assert settings_from([], {"TETHER_BOX_PORT": "9000"}).port == 9000


def test_websocket_deflate_settings() -> None:
    s = Settings.from_env(
        {
            "TETHER_BOX_WS_DEFLATE_WINDOW_BITS": "12",
            "TETHER_BOX_WS_DEFLATE_CONTEXT_TAKEOVER": "no",
            "TETHER_BOX_WS_DEFLATE_MAX_CONNECTION_BYTES": "100000",
        }
    )
    assert s.deflate is not None
    assert (s.deflate.window_bits, s.deflate.context_takeover, s.deflate.mem_level) == (12, False, 6)
    assert Settings(ws_deflate=False).deflate is None
    default = Settings().deflate
    assert default is not None
    assert (default.window_bits, default.mem_level) == (12, 6)
    with pytest.raises(ValueError, match="ws_deflate_window_bits=8"):
        Settings(ws_deflate_window_bits=8)
    with pytest.raises(ValueError, match="ws_deflate_max_connection_bytes=100000"):
        Settings(ws_deflate_window_bits=15, ws_deflate_max_connection_bytes=100_000)  # needs more


def test_worker_routing_comes_from_the_environment_or_the_flag() -> None:
    assert Settings().worker_routing == "affinity"
    env = {"TETHER_BOX_WORKER_ROUTING": "round-robin"}
    assert Settings.from_env(env).worker_routing == "round-robin"
    assert settings_from(["--worker-routing", "least-loaded"], env).worker_routing == "least-loaded"
    with pytest.raises(ValueError, match="worker_routing='random'"):
        Settings.from_env({"TETHER_BOX_WORKER_ROUTING": "random"})
    with pytest.raises(SystemExit):
        settings_from(["--worker-routing", "random"], {})


def test_a_bad_compaction_key_fails_without_being_shown() -> None:
    with pytest.raises(ValueError, match="compaction_key=<not shown>") as bad:
        Settings.from_env({"TETHER_BOX_COMPACTION_KEY": "secret-but-short"})
    assert "secret-but-short" not in str(bad.value)
    assert "secret" not in repr(Settings(compaction_key="A" * 43))

"""Settings of one router process, from `TETHER_ROUTER_<NAME>` environment variables; CLI flags override.

Exactly one membership source: `boxes` (static `name=host:port[@weight],...`), `dns` (`name:port`, the A/AAAA
records of a headless Service, polled) or `k8s_service` (an EndpointSlice watch). `routing_keys` is the
ordered list of places the routing key is read from (`header:NAME` and `query:NAME`, first non-empty one
wins; see docs/routing.md). The variables are read by the shared loader (tether_runtime/settings.py: an
empty variable is unset; `none` or `off` turns bounded_load off). Bad values raise ConfigError at startup,
naming the variable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from router.core.errors import ConfigError
from router.core.hashring import DEFAULT_VNODES, MAX_POINTS
from router.core.head import DEFAULT_ROUTING_KEYS, KeySpec, parse_routing_keys
from router.core.membership import Member, parse_boxes, parse_host_port
from tether_runtime.logs import LOG_LEVELS, LogFormat
from tether_runtime.settings import EnvLoader

__all__ = ["ENV", "ENV_PREFIX", "LogFormat", "Settings"]

ENV_PREFIX = "TETHER_ROUTER_"
_SOURCES = ("boxes", "dns", "k8s_service")
_REPLACED = {"SESSION_HEADER": "header:NAME", "SESSION_QUERY": "query:NAME"}  # by routing_keys


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the router process needs. Times are seconds; sizes are bytes."""

    host: str = "127.0.0.1"
    port: int = 8080  # 0: a free port
    admin_host: str | None = None  # None: same as `host`
    admin_port: int = 9090  # 0: a free port, -1: no admin server
    boxes: str | None = None
    dns: str | None = None
    dns_interval: float = 5.0
    k8s_service: str | None = None
    k8s_namespace: str | None = None  # None: the pod's own namespace, else "default"
    k8s_port_name: str | None = None  # None: the first port of each slice
    k8s_api_url: str | None = None  # None: in-cluster config, else kubeconfig; set for `kubectl proxy`
    k8s_watch_timeout: float = 300.0
    routing_keys: str = DEFAULT_ROUTING_KEYS
    bounded_load: float | None = None  # c > 1 enables bounded loads; None: off
    vnodes: int = DEFAULT_VNODES
    max_head_bytes: int = 32 * 1024
    head_timeout: float = 10.0
    connect_timeout: float = 2.0
    connect_attempts: int = 3
    down_cooldown: float = 5.0
    probe_interval: float = 1.0
    idle_timeout: float = 3900.0  # longer than the box's 60-minute connection limit
    send_timeout: float = 30.0  # a client that takes none of the bytes buffered for it this long is dropped
    max_connections: int = 50_000
    backlog: int = 2048
    drain_timeout: float = 30.0
    log_format: LogFormat = "text"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        _check(_is_host(self.host), "host", self.host, "a host name or address")
        _check(self.admin_host is None or _is_host(self.admin_host), "admin_host", self.admin_host, "a host")
        _check(0 <= self.port <= 65535, "port", self.port, "0..65535")
        _check(-1 <= self.admin_port <= 65535, "admin_port", self.admin_port, "-1 (off), 0 (free) or a port")
        sources = [s for s in (self.boxes, self.dns, self.k8s_service) if s]
        _check(len(sources) == 1, "boxes/dns/k8s_service", len(sources), "exactly one membership source")
        if self.boxes:
            parse_boxes(self.boxes)
        if self.dns:
            parse_host_port(self.dns)
        try:
            parse_routing_keys(self.routing_keys)
        except ConfigError as exc:
            raise ConfigError(f"{ENV_PREFIX}ROUTING_KEYS={self.routing_keys!r}: {exc}") from None
        bounded = self.bounded_load
        _check(
            bounded is None or (math.isfinite(bounded) and bounded > 1),
            "bounded_load",
            bounded,
            "a factor > 1",
        )
        _check(1 <= self.vnodes <= MAX_POINTS, "vnodes", self.vnodes, f"1..{MAX_POINTS}")
        _check(1024 <= self.max_head_bytes <= 1 << 20, "max_head_bytes", self.max_head_bytes, "1024..1048576")
        _check(1 <= self.connect_attempts <= 16, "connect_attempts", self.connect_attempts, "1..16")
        _check(1 <= self.max_connections <= 1_000_000, "max_connections", self.max_connections, "1..1000000")
        _check(1 <= self.backlog <= 65535, "backlog", self.backlog, "1..65535")
        for name in (
            "dns_interval",
            "k8s_watch_timeout",
            "head_timeout",
            "connect_timeout",
            "down_cooldown",
            "probe_interval",
            "idle_timeout",
            "send_timeout",
            "drain_timeout",
        ):
            value = getattr(self, name)
            _check(math.isfinite(value) and value > 0, name, value, "seconds > 0")
        _check(self.log_format in ("text", "json"), "log_format", self.log_format, "text or json")
        _check(self.log_level.upper() in LOG_LEVELS, "log_level", self.log_level, ", ".join(LOG_LEVELS))

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: object) -> Settings:
        """Settings from `TETHER_ROUTER_*` variables; keyword `overrides` (CLI flags, None: not given) win."""
        for old, entry in _REPLACED.items():
            if environ.get(ENV_PREFIX + old, "").strip():
                raise ConfigError(
                    f"{ENV_PREFIX}{old} was replaced by {ENV_PREFIX}ROUTING_KEYS, an ordered list of "
                    f"header:NAME and query:NAME entries (put {entry} in it)"
                )
        values = ENV.read(environ)
        if values.get("bounded_load") == 0:  # 0 has always meant off, like none and off
            values["bounded_load"] = None
        given = {name: value for name, value in overrides.items() if value is not None}
        if any(given.get(name) for name in _SOURCES):  # a source flag replaces the environment's source
            for name in _SOURCES:
                values.pop(name, None)
        return ENV.build({**values, **given})

    def key_sources(self) -> tuple[KeySpec, ...]:
        """The routing key sources, in the order tried."""
        return parse_routing_keys(self.routing_keys)

    def static_members(self) -> tuple[Member, ...]:
        """The static member list (`boxes`), or () for the other sources."""
        return parse_boxes(self.boxes) if self.boxes else ()


def _is_host(value: str) -> bool:
    return bool(value) and not any(c.isspace() for c in value)


def _check(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={value!r}: expected {expected}")


# Field → variable: TETHER_ROUTER_<FIELD>.
ENV = EnvLoader(Settings, ENV_PREFIX, error=ConfigError)

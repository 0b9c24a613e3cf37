"""The API box's settings: one frozen object per process, from an injected environment, CLI flags on top.

Every field has an environment variable `TETHER_BOX_<FIELD IN UPPER CASE>`, read by the shared loader
(tether_runtime/settings.py: lists are comma-separated, booleans 1/0/true/false/yes/no/on/off, an empty
variable is unset). `Settings.from_env(os.environ)` reads them; `api_box.__main__` applies command-line
flags with `Settings.replace`. Bad values fail loudly at start-up, naming the variable.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from api_box.core.compaction import parse_key
from api_box.core.deflate import DeflatePolicy
from api_box.core.protocol import HOSTED_TOOL_POLICIES, Limits
from gpu_worker.client import ROUTINGS
from tether_runtime.logs import LOG_FORMATS, LOG_LEVELS, LogFormat
from tether_runtime.settings import EnvLoader

ENV_PREFIX = "TETHER_BOX_"
_MIB = 1024 * 1024
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable about one API box process."""

    host: str = "127.0.0.1"
    port: int = 8080  # 0: a free port (printed on the start line)
    admin_port: int = 0  # /metrics; 0: a free port, -1: off (/livez and /readyz are on the main port too)
    workers: tuple[str, ...] = ("127.0.0.1:50051",)
    box_id: str = field(default_factory=socket.gethostname)
    models: tuple[str, ...] = ("tether-sim",)  # listed by GET /v1/models (any model name is accepted)
    api_keys: tuple[str, ...] = ()  # keys of tenant "default"
    api_keys_file: str = ""
    dev: bool = False  # also accept the documented key tether-dev-key (tenant "default")
    session_store_bytes: int = 512 * _MIB
    connection_max_seconds: float = 3600.0
    log_format: LogFormat = "text"  # text | json (docs/logging.md)
    log_level: str = "INFO"
    max_frame_bytes: int = 16 * _MIB
    max_body_bytes: int = 32 * _MIB
    max_json_depth: int = 32
    max_items: int = 4096
    max_tools: int = 128
    hosted_tools: str = "omit"  # tools the box cannot run (web_search, ...): omit (say so) | reject (400)
    max_chain_tokens: int = 1_048_576
    max_queued_creates: int = 64  # per WebSocket connection, across its lanes
    ws_max_in_flight: int = 16  # responses running at once on one connection (different stream_id lanes)
    ws_max_streams: int = 32  # distinct named lanes (stream_id) per connection
    # response.steer (api_box/core/steer.py): off answers every steer steering_not_supported.
    ws_steering: bool = True
    ws_max_pending_steers: int = 8  # accepted steers waiting for one response
    ws_max_connections: int = 10_000  # open WebSockets; past it an upgrade is answered 426 (clients use HTTP)
    send_queue_frames: int = 4096
    send_timeout_seconds: float = 30.0
    body_timeout_seconds: float = 60.0  # an HTTP body must arrive within this
    ws_heartbeat_seconds: float = 30.0
    # permessage-deflate (RFC 7692) for clients that offer it: api_box/core/deflate.py.
    # Defaults chosen by benchmarks/deflate_bench.py (docs/websocket_compression.md).
    ws_deflate: bool = True
    ws_deflate_window_bits: int = 12  # 9..15, the box's LZ77 window and the most it grants the client
    ws_deflate_context_takeover: bool = True  # False: every message is compressed on its own
    ws_deflate_max_connection_bytes: int = 96 * 1024  # zlib memory one connection may hold
    worker_connect_timeout: float = 2.0
    worker_request_timeout: float = 300.0
    # Which worker a generation goes to (gpu_worker/client/policy.py): affinity (a chain stays on its
    # worker's prefix cache) | round-robin (what a Service in front of replicas does) | least-loaded.
    worker_routing: str = "affinity"
    default_max_output_tokens: int = 1024
    # The sampling temperature of a request that sends none (the API's default, 1; 0: greedy). Clients such
    # as the Codex CLI never send one, and a small model at 1 writes noise (README, Codex CLI).
    default_temperature: float = 1.0
    shutdown_grace_seconds: float = 10.0  # drain budget for in-flight responses (SIGTERM)
    # Cold store (api_box/io/redis_store.py); an empty URL runs without one.
    redis_url: str = ""
    redis_prefix: str = "tether"
    redis_ttl_seconds: float = 86400.0
    redis_timeout_seconds: float = 2.0  # a restore or a write batch, waits on a busy event loop included
    write_behind_queue: int = 65536  # turns waiting to be written
    write_behind_bytes: int = 256 * _MIB
    write_behind_batch: int = 128  # turns written per pipelined round trip, at most
    write_behind_flush_seconds: float = 3.0  # flush budget at drain and shutdown
    # store:false handoff across a drain, sealed under the client's key (api_box/io/sealed.py); needs Redis.
    sealed_handoff: bool = True
    sealed_handoff_ttl_seconds: float = 60.0
    sealed_handoff_max_bytes: int = 16 * _MIB  # a bigger chain is not sealed (the client resends it)
    # Resume a dropped WebSocket on this box (api_box/io/resume.py): a client that sent a resume key
    # (X-Tether-Handoff-Key) and reconnects within the grace window gets its connection-local responses
    # back. 0: off. Parked connections are bounded in count and bytes, memory only.
    ws_resume_grace_seconds: float = 60.0
    ws_resume_max_connections: int = 4096
    ws_resume_max_bytes: int = 256 * _MIB
    # Compaction items (api_box/core/compaction.py) are sealed under this key: base64 of 32 bytes, the same
    # on every box of a deployment. Empty: a random key per process, so an item opens only on its own box.
    compaction_key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        checks = {
            "port": -1 < self.port < 65536,
            "admin_port": -2 < self.admin_port < 65536,
            "workers": bool(self.workers) and all(_is_target(w) for w in self.workers),
            "box_id": bool(self.box_id),
            "models": bool(self.models),
            "session_store_bytes": self.session_store_bytes > 0,
            "connection_max_seconds": self.connection_max_seconds > 0,
            "log_format": self.log_format in LOG_FORMATS,
            "log_level": self.log_level.upper() in LOG_LEVELS,
            "max_frame_bytes": self.max_frame_bytes >= 1024,
            "max_body_bytes": self.max_body_bytes >= 1024,
            "max_json_depth": self.max_json_depth >= 4,
            "max_items": self.max_items >= 1,
            "max_tools": self.max_tools >= 0,
            "hosted_tools": self.hosted_tools in HOSTED_TOOL_POLICIES,
            "max_chain_tokens": self.max_chain_tokens >= 16,
            "max_queued_creates": self.max_queued_creates >= 0,
            "ws_max_in_flight": self.ws_max_in_flight >= 1,
            "ws_max_streams": self.ws_max_streams >= 0,
            "ws_max_pending_steers": self.ws_max_pending_steers >= 1,
            "ws_max_connections": self.ws_max_connections >= 0,
            "send_queue_frames": self.send_queue_frames >= 8,
            "send_timeout_seconds": self.send_timeout_seconds > 0,
            "body_timeout_seconds": self.body_timeout_seconds > 0,
            "ws_heartbeat_seconds": self.ws_heartbeat_seconds > 0,
            "ws_deflate_window_bits": 9 <= self.ws_deflate_window_bits <= 15,
            "ws_deflate_max_connection_bytes": _deflate_fits(
                self.ws_deflate_window_bits, self.ws_deflate_max_connection_bytes
            ),
            "worker_connect_timeout": self.worker_connect_timeout > 0,
            "worker_request_timeout": self.worker_request_timeout > 0,
            "worker_routing": self.worker_routing in ROUTINGS,
            "default_max_output_tokens": self.default_max_output_tokens >= 1,
            "default_temperature": 0.0 <= self.default_temperature <= 2.0,
            "shutdown_grace_seconds": self.shutdown_grace_seconds >= 0,
            "redis_url": self.redis_url == "" or self.redis_url.startswith(_REDIS_SCHEMES),
            "redis_prefix": bool(self.redis_prefix) and self.redis_prefix.isprintable(),
            "redis_ttl_seconds": self.redis_ttl_seconds >= 1,
            "redis_timeout_seconds": self.redis_timeout_seconds > 0,
            "write_behind_queue": self.write_behind_queue >= 1,
            "write_behind_bytes": self.write_behind_bytes >= 1024,
            "write_behind_batch": self.write_behind_batch >= 1,
            "write_behind_flush_seconds": self.write_behind_flush_seconds >= 0,
            "sealed_handoff_ttl_seconds": self.sealed_handoff_ttl_seconds >= 1,
            "sealed_handoff_max_bytes": self.sealed_handoff_max_bytes >= 1024,
            "ws_resume_grace_seconds": 0 <= self.ws_resume_grace_seconds <= 86400,
            "ws_resume_max_connections": self.ws_resume_max_connections >= 1,
            "ws_resume_max_bytes": self.ws_resume_max_bytes >= 1024,
            "compaction_key": self.compaction_key == "" or _is_compaction_key(self.compaction_key),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid API box settings: {', '.join(f'{n}={_shown(self, n)}' for n in bad)}")

    @property
    def limits(self) -> Limits:
        """Parser limits derived from these settings."""
        return Limits(
            max_json_depth=self.max_json_depth,
            max_items=self.max_items,
            max_tools=self.max_tools,
            hosted_tools=self.hosted_tools,
        )

    @property
    def deflate(self) -> DeflatePolicy | None:
        """The permessage-deflate policy, None when compression is off."""
        if not self.ws_deflate:
            return None
        return DeflatePolicy(
            window_bits=self.ws_deflate_window_bits,
            context_takeover=self.ws_deflate_context_takeover,
            max_connection_bytes=self.ws_deflate_max_connection_bytes,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from TETHER_BOX_* variables; raises ValueError naming the bad variable."""
        return ENV.load(env)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (CLI flags over the environment); None values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _shown(settings: Settings, name: str) -> str:
    return "<not shown>" if name == "compaction_key" else repr(getattr(settings, name))


def _is_compaction_key(text: str) -> bool:
    try:
        parse_key(text)
    except ValueError:
        return False
    return True


def _deflate_fits(window_bits: int, max_connection_bytes: int) -> bool:
    try:
        DeflatePolicy(window_bits=window_bits, max_connection_bytes=max_connection_bytes)
    except ValueError:
        return not 9 <= window_bits <= 15  # reported under ws_deflate_window_bits instead
    return True


def _is_target(target: str) -> bool:
    host, sep, port = target.rpartition(":")
    return bool(host) and bool(sep) and port.isdigit() and 0 < int(port) < 65536


# Field → variable (TETHER_BOX_<FIELD>); the compaction key never shows in an error.
ENV = EnvLoader(Settings, ENV_PREFIX, hidden=("compaction_key",))

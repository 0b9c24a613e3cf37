"""ClusterSpec: what `tether up` (and `LocalCluster` in tests) starts, built from the environment.

Environment names are `TETHER_UP_<FIELD>` (e.g. `TETHER_UP_BOXES=3`, `TETHER_UP_REDIS_URL=redis://...`);
command-line flags override them (tether/cli.py). The variables are read by the shared loader
(tether_runtime/settings.py: an empty variable is unset). Bad values fail loudly with ConfigError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gpu_worker.client import ROUTINGS
from tether.errors import ConfigError
from tether_runtime.logs import LogFormat
from tether_runtime.settings import EnvLoader

ENV_PREFIX = "TETHER_UP_"
DEV_API_KEY = "tether-dev-key"
CLI_DEFAULT_PORT = 8080
MAX_PROCESSES_PER_KIND = 64

RedisChoice = str | None  # "auto" | a redis:// URL | None (no Redis)
_NO_REDIS = ("off", "none", "0", "false", "no")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """A local cluster: `workers` model workers, `boxes` API boxes, a router in front, optional Redis.

    `port` is the base port clients use (the router's, or box-0's without a router); 0 picks a free one.
    `speed` scales the sim engine's timing (1 = calibrated real-GPU timing, 0 = as fast as possible).
    `redis` is "auto" (start `redis-server` when it is on PATH), a `redis://` URL to use, or None.
    `worker_routing`: how each box picks the worker of a generation (gpu_worker/client/policy.py).
    `restart`: start a child that exits again (tether/supervisor.py); without it a child's exit fails the
    cluster. The environment (the CLI) defaults it to on, the Python API (tests) to off.
    """

    boxes: int = 2
    workers: int = 2
    router: bool = True
    redis: RedisChoice = "auto"
    host: str = "127.0.0.1"
    port: int = 0
    api_key: str = DEV_API_KEY
    engine: str = "sim"
    model_path: str = ""  # torch: a GGUF file or a Hugging Face directory (empty: dummy weights)
    speed: float = 1.0
    worker_routing: str = "affinity"
    log_format: LogFormat = "text"
    start_timeout: float = 60.0
    stop_timeout: float = 15.0
    restart: bool = False

    def __post_init__(self) -> None:
        most = MAX_PROCESSES_PER_KIND
        _check(1 <= self.boxes <= most, "boxes", self.boxes, f"1..{most}")
        _check(1 <= self.workers <= most, "workers", self.workers, f"1..{most}")
        _check(0 <= self.port <= 65535, "port", self.port, "0..65535")
        _check(bool(self.host) and not any(c.isspace() for c in self.host), "host", self.host, "a host name")
        _check(bool(self.api_key) and self.api_key.isprintable(), "api_key", "<hidden>", "a printable key")
        _check(" " not in self.api_key, "api_key", "<hidden>", "a key without spaces")
        _check(self.engine in ("sim", "torch"), "engine", self.engine, "sim or torch")
        torch_only = not self.model_path or self.engine == "torch"
        _check(torch_only, "model_path", self.model_path, "a checkpoint for engine torch")
        _check(math.isfinite(self.speed) and self.speed >= 0, "speed", self.speed, "a number >= 0")
        _check(self.worker_routing in ROUTINGS, "worker_routing", self.worker_routing, " or ".join(ROUTINGS))
        _check(self.log_format in ("text", "json"), "log_format", self.log_format, "text or json")
        _check(self.start_timeout > 0, "start_timeout", self.start_timeout, "seconds > 0")
        _check(self.stop_timeout >= 0, "stop_timeout", self.stop_timeout, "seconds >= 0")
        ok_redis = (
            self.redis is None or self.redis == "auto" or self.redis.startswith(("redis://", "rediss://"))
        )
        _check(ok_redis, "redis", self.redis, "auto, a redis:// URL, or none")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: object) -> ClusterSpec:
        """Build a spec from `TETHER_UP_*` variables; keyword `overrides` (CLI flags) win over them.

        The environment defaults the port to 8080 and `restart` to on (the CLI's defaults); the Python API
        defaults to port 0 and no restarts.
        `TETHER_UP_REDIS_URL` sets a URL, `TETHER_UP_REDIS=off` disables Redis.
        """
        values: dict[str, object] = {"port": CLI_DEFAULT_PORT, "restart": True, **ENV.read(environ)}
        redis_url = environ.get(ENV_PREFIX + "REDIS_URL", "").strip()
        redis = environ.get(ENV_PREFIX + "REDIS", "").strip()
        if redis_url:
            values["redis"] = redis_url
        elif redis:
            values["redis"] = None if redis.lower() in _NO_REDIS else redis
        values.update(overrides)
        if values.get("model_path") and "engine" not in values:
            values["engine"] = "torch"  # a checkpoint is served by the torch engine
        return ENV.build(values)


def _check(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"bad {name} {value!r}: expected {expected}")


# Field → variable: TETHER_UP_<FIELD>; `redis` comes from TETHER_UP_REDIS_URL or TETHER_UP_REDIS (above).
ENV = EnvLoader(ClusterSpec, ENV_PREFIX, exclude=("redis",), hidden=("api_key",), error=ConfigError)

"""Command lines of the processes a local cluster runs, from a ClusterSpec. Pure: no process is started.

Start order is redis → workers → boxes → router (each kind needs the addresses of the one before);
shutdown runs in the reverse order so that boxes can drain through live workers and flush to a live Redis.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tether.config import ClusterSpec
from tether.core.serving import ServingLine

Kind = Literal["redis", "worker", "box", "router"]
START_ORDER: tuple[Kind, ...] = ("redis", "worker", "box", "router")
PROGRAMS: dict[Kind, str] = {
    "redis": "redis-server",
    "worker": "tether-gpu-worker",
    "box": "tether-api-box",
    "router": "tether-router",
}
# `python -m <module>` runs the program when its console script is not installed.
MODULES: dict[Kind, str] = {"worker": "gpu_worker", "box": "api_box", "router": "router"}
BOX_REDIS_URL_ENV = "TETHER_BOX_REDIS_URL"
# The services' own settings the launcher sets: the log format, and a drain budget that fits inside the
# launcher's stop grace (so a drain ends before the SIGKILL).
ENV_PREFIXES: dict[Kind, str] = {"worker": "TETHER_WORKER_", "box": "TETHER_BOX_", "router": "TETHER_ROUTER_"}
DRAIN_SETTINGS: dict[Kind, str] = {
    "worker": "DRAIN_SECONDS",
    "box": "SHUTDOWN_GRACE_SECONDS",
    "router": "DRAIN_TIMEOUT",
}
DRAIN_SHARE = 2 / 3
EnvPairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ChildPlan:
    """One process to start: its name (`box-0`), kind, arguments (without the program) and extra env."""

    name: str
    kind: Kind
    args: tuple[str, ...]
    env: EnvPairs = ()  # set over the inherited environment
    env_defaults: EnvPairs = ()  # set unless the inherited environment has them


def worker_name(index: int) -> str:
    """Process name of worker `index`."""
    return f"worker-{index}"


def box_name(index: int) -> str:
    """Process name of box `index`; also its `--box-id` and its member name in the router's ring."""
    return f"box-{index}"


def box_port(spec: ClusterSpec, index: int) -> int:
    """Box-0 takes the base port when no router sits in front; every other box picks a free port."""
    return spec.port if index == 0 and not spec.router else 0


def redis_plan(host: str, port: int) -> ChildPlan:
    """redis-server on a chosen port, in memory only, quiet."""
    args = ("--port", str(port), "--bind", host, "--save", "", "--appendonly", "no", "--loglevel", "warning")
    return ChildPlan("redis", "redis", args)


def worker_plan(spec: ClusterSpec, index: int, port: int = 0) -> ChildPlan:
    """A model worker on `port` (0: free) with its metrics on a free port."""
    args: tuple[str, ...] = ("--host", spec.host, "--port", str(port), "--metrics-port", "0")
    args += ("--engine", spec.engine, "--speed", _number(spec.speed))
    if spec.model_path:
        args += ("--model-path", spec.model_path)
    return ChildPlan(worker_name(index), "worker", args, *_service_env(spec, "worker"))


def box_plan(
    spec: ClusterSpec,
    index: int,
    worker_targets: Sequence[str],
    redis_url: str | None,
    port: int | None = None,
) -> ChildPlan:
    """An API box talking to every worker; the Redis URL goes through the environment."""
    chosen = box_port(spec, index) if port is None else port
    args: tuple[str, ...] = ("--host", spec.host, "--port", str(chosen), "--admin-port", "0")
    args += ("--workers", ",".join(worker_targets), "--box-id", box_name(index), "--api-key", spec.api_key)
    args += ("--worker-routing", spec.worker_routing)
    env, defaults = _service_env(spec, "box")
    defaults += ((ENV_PREFIXES["box"] + "MODELS", f"tether-{spec.engine}"),)  # what GET /v1/models lists
    # Every box seals and opens compaction items under one key (a default: the user's own setting wins).
    defaults += ((ENV_PREFIXES["box"] + "COMPACTION_KEY", compaction_key(spec)),)
    if redis_url:
        env += ((BOX_REDIS_URL_ENV, redis_url),)
    return ChildPlan(box_name(index), "box", args, env, defaults)


def compaction_key(spec: ClusterSpec) -> str:
    """The boxes' shared compaction key, derived from the cluster's API key: stable across restarts of a
    box, and only as secret as that key (a local cluster's; a deployment sets its own, docs/protocol.md)."""
    digest = hashlib.blake2b(spec.api_key.encode(), digest_size=32, person=b"tether-up-cmp").digest()
    return base64.b64encode(digest).decode()


def router_plan(spec: ClusterSpec, boxes: Sequence[tuple[str, str]], port: int | None = None) -> ChildPlan:
    """The router on the base port, with the boxes as `name=host:port` members."""
    members = ",".join(f"{name}={target}" for name, target in boxes)
    chosen = spec.port if port is None else port
    args = ("--host", spec.host, "--port", str(chosen), "--admin-port", "0", "--boxes", members)
    return ChildPlan("router", "router", args, *_service_env(spec, "router"))


def readiness_url(kind: Kind, serving: ServingLine) -> str:
    """GET target of a box's or the router's readiness: the router answers /readyz on its admin port
    (its main port relays bytes to the boxes), a box on its main port."""
    if kind == "router" and serving.metrics_url is not None and serving.metrics_url.endswith("/metrics"):
        return serving.metrics_url.removesuffix("/metrics") + "/readyz"
    return f"{serving.http_url}/readyz"


def _service_env(spec: ClusterSpec, kind: Kind) -> tuple[EnvPairs, EnvPairs]:
    prefix = ENV_PREFIXES[kind]
    drain = _number(round(spec.stop_timeout * DRAIN_SHARE, 3))
    return ((prefix + "LOG_FORMAT", spec.log_format),), ((prefix + DRAIN_SETTINGS[kind], drain),)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)

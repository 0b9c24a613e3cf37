"""Real Redis for the tests that need one — never a fake.

`redis_server` (session) finds one, in this order:
1. `REDIS_URL` from the environment;
2. testcontainers' `RedisContainer` (image `redis:7.4-alpine`), when a container engine answers a ping;
3. a local `redis-server` on a free port, in memory only (scripts/test installs it with apt as root);
otherwise the tests that use it are skipped, saying why (`-ra` lists them).

`redis_prefix` gives every test its own key prefix, so tests never flush a shared server.
`local_redis` starts a private redis-server that a test may stop and start again on the same port
(Redis down, then back); it needs the `redis-server` binary.
"""

from __future__ import annotations

import contextlib
import gc
import os
import secrets
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

REDIS_IMAGE = "redis:7.4-alpine"
START_TIMEOUT = 10.0
_START_ATTEMPTS = 3  # a free port found by binding may be taken before redis-server binds it


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class LocalRedis:
    """A redis-server child process on a fixed port; `stop()` and `start()` may be repeated."""

    port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """redis://host:port/0"""
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        """Start (again) on the same port and wait until it answers PING."""
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not on PATH"
        args = [binary, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*args, "--loglevel", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not ping(self.host, self.port):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.02)  # polling a child's readiness: there is no event to wait on

    def stop(self) -> None:
        """SIGKILL the server (what a crash looks like) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None


def start_local_redis() -> LocalRedis:
    """A fresh local redis-server on a free port (retried when the port was taken in between)."""
    for attempt in range(1, _START_ATTEMPTS + 1):
        server = LocalRedis(free_port())
        try:
            server.start()
        except RuntimeError:
            if attempt == _START_ATTEMPTS:
                raise
            continue
        return server
    raise AssertionError("unreachable")


def _engine_answers() -> bool:
    """Whether a container engine answers a ping (the docker client alone is not enough)."""
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the docker client's own deprecation and socket warnings
        try:
            import docker

            client = docker.from_env()
        except Exception:
            gc.collect()
            return False
        try:
            return bool(client.ping())
        except Exception:
            return False
        finally:
            client.close()


@contextlib.contextmanager
def _container_redis() -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from testcontainers.community.redis import RedisContainer

    with RedisContainer(REDIS_IMAGE) as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(container.port)
        yield f"redis://{host}:{port}/0"


@dataclass(frozen=True)
class RedisServer:
    """Where the tests' Redis is, and where it came from (env, container or local)."""

    url: str
    kind: str


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real Redis for the whole session (see the module docstring for the order of choices)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield RedisServer(url, "env")
        return
    if _engine_answers():
        with _container_redis() as container_url:
            yield RedisServer(container_url, "container")
        return
    if shutil.which("redis-server") is None:
        pytest.skip("no Redis: set REDIS_URL, run a container engine, or install redis-server (scripts/test)")
    server = start_local_redis()
    try:
        yield RedisServer(server.url, "local")
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's Redis."""
    return redis_server.url


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own."""
    return f"tether-test-{secrets.token_hex(6)}"


@pytest.fixture
def local_redis() -> Iterator[Callable[[], LocalRedis]]:
    """Start private redis-servers that a test may stop and start; every one is stopped at the end."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs the redis-server binary (scripts/test installs it)")
    started: list[LocalRedis] = []

    def start() -> LocalRedis:
        server = start_local_redis()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()

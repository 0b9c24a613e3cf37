"""Composition root: a Router, its membership source and its admin server, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from router.config import Settings
from router.core.membership import parse_host_port
from router.io.admin import build_admin_app
from router.io.clock import Clock
from router.io.router import Router
from router.io.sources import DnsSource, KubernetesSource, MembershipSource, StaticSource

__all__ = ["RunningRouter", "build_source", "start_router", "url"]

log = logging.getLogger("router")
STATIC_RING_TIMEOUT = 30.0  # building the first ring from a static list (a thread; ~0.5 s at 128 boxes)


def url(host: str, port: int, path: str = "") -> str:
    """`http://host:port/path`, IPv6 hosts in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}"


def build_source(settings: Settings) -> MembershipSource:
    """The membership source the settings name (exactly one is set; Settings checks that)."""
    if settings.boxes:
        return StaticSource(settings.static_members())
    if settings.dns:
        host, port = parse_host_port(settings.dns)
        return DnsSource(host, port, settings.dns_interval)
    assert settings.k8s_service is not None
    return KubernetesSource(
        settings.k8s_service,
        settings.k8s_namespace,
        port_name=settings.k8s_port_name,
        api_url=settings.k8s_api_url,
        watch_timeout=settings.k8s_watch_timeout,
    )


@dataclass
class RunningRouter:
    """A started router: where it listens, and how to stop it."""

    router: Router
    host: str
    port: int
    metrics_url: str | None
    _source_task: asyncio.Task[None]
    _admin: web.AppRunner | None

    @property
    def url(self) -> str:
        """The base URL clients connect to."""
        return url(self.host, self.port)

    def banner(self) -> str:
        """The one line a launcher parses."""
        return f"tether-router serving {self.url} metrics {self.metrics_url or 'off'}"

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Drain (readiness fails at once), then stop the source, the admin server and every task."""
        timeout = self.router.settings.drain_timeout if drain_timeout is None else drain_timeout
        await self.router.drain(timeout)
        self._source_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._source_task
        if self._admin is not None:
            await self._admin.cleanup()
        await self.router.close()


async def start_router(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    source: MembershipSource | None = None,
    clock: Clock | None = None,
) -> RunningRouter:
    """Start listening, the membership source and the admin server. With a static list the first ring is
    in place before this returns, so the first connection is routed. `clock`: the event loop unless given
    (tests pass a fake one to move the router's deadlines by hand)."""
    router = Router(settings, registry if registry is not None else CollectorRegistry(), clock)
    host, port = await router.start()
    membership = source if source is not None else build_source(settings)
    source_task = asyncio.get_running_loop().create_task(
        _run_source(membership, router), name="router-source"
    )
    if isinstance(membership, StaticSource) and not await router.wait_ring(STATIC_RING_TIMEOUT):
        log.warning("the static ring was not built within %.0f s", STATIC_RING_TIMEOUT)
    admin: web.AppRunner | None = None
    metrics_url: str | None = None
    if settings.admin_port >= 0:
        admin = web.AppRunner(build_admin_app(router), access_log=None, shutdown_timeout=1.0)
        await admin.setup()
        admin_host = settings.admin_host or settings.host
        await web.TCPSite(admin, admin_host, settings.admin_port).start()
        admin_port = int(admin.addresses[0][1])
        metrics_url = url(admin_host, admin_port, "/metrics")
    return RunningRouter(router, host, port, metrics_url, source_task, admin)


async def _run_source(source: MembershipSource, router: Router) -> None:
    try:
        await source.run(router.set_members)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the membership source stopped: the ring keeps its last members")

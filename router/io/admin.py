"""The admin HTTP server (aiohttp), on its own port: /metrics, /debug/ring, /livez, /readyz."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from router.core.hashring import HashRing
from router.io.router import Router

__all__ = ["ROUTER", "build_admin_app", "ring_description"]

ROUTER = web.AppKey("router", Router)


def ring_description(router: Router, ring: HashRing, shares: Mapping[str, float]) -> dict[str, object]:
    """What /debug/ring answers: the ring version, its layout and every member with its exact share."""
    now = router.now()
    members = []
    for name in ring.members:
        member = router.members.get(name)
        members.append(
            {
                "name": name,
                "address": member.address if member is not None else None,
                "weight": ring.weights[name],
                "vnodes": ring.points_of(name),
                "share": round(shares.get(name, 0.0), 6),
                "connections": router.loads.get(name, 0),
                "down": router.down.is_down(name, now),
            }
        )
    return {
        "version": ring.version,
        "vnodes_per_weight": ring.vnodes_per_weight,
        "members": members,
        "bounded_load": router.settings.bounded_load,
        "routing_keys": [str(spec) for spec in router.key_sources],
    }


async def _ring(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    ring = router.ring
    shares = await asyncio.to_thread(ring.shares)  # walks every point once per ring (then cached)
    return web.json_response(ring_description(router, ring, shares))


async def _livez(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    if router.ready():
        return web.Response(text="ok\n")
    reason = "draining" if router.draining else "no ring members"
    return web.Response(status=503, text=f"not ready: {reason}\n")


def build_admin_app(router: Router) -> web.Application:
    """The admin application for `router` (metrics from the router's own registry)."""
    app = web.Application()
    app[ROUTER] = router
    app.router.add_get("/metrics", make_aiohttp_handler(router.metrics.registry))
    app.router.add_get("/debug/ring", _ring)
    app.router.add_get("/livez", _livez)
    app.router.add_get("/readyz", _readyz)
    return app

"""Composition root: `build_app(settings, *, registry, worker_pool, cold_store=None)`.

The app owns the worker pool's lifetime (started on startup, closed on cleanup), the background tasks,
the cold store (Redis when `settings.redis_url` is set and no `cold_store` is given; started on startup,
flushed and closed on cleanup), and the open WebSockets (closed with 1012 on shutdown; a SIGTERM drains
first, api_box/io/drain.py). Every response carries `X-Tether-Box: <box id>`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from api_box.config import Settings
from api_box.core.auth import KeyRing, parse_keys_file
from api_box.core.errors import BoxError
from api_box.core.parking import ParkingLot
from api_box.core.store import SessionStore
from api_box.io import http
from api_box.io.cold_store import ColdStore, NullColdStore
from api_box.io.drain import INFLIGHT, InFlight, inflight_middleware
from api_box.io.errors import as_box_error, http_error_response
from api_box.io.logctx import REQUEST_ID, request_id_from
from api_box.io.metrics import BoxMetrics, build_metrics, register_worker_calls
from api_box.io.redis_store import RedisColdStore
from api_box.io.resume import Resumes
from api_box.io.sealed import SealedHandoffs
from api_box.io.state import REQUEST_ID_KEY, STATE, TENANT, BoxState
from api_box.io.tasks import TaskSet
from api_box.io.turns import TurnRunner
from gpu_worker.client import WorkerPool

_LOG = logging.getLogger("api_box.app")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_keyring(settings: Settings) -> KeyRing:
    """The API keys of these settings (reads the keys file); raises ValueError on a bad file."""
    from_file = parse_keys_file(Path(settings.api_keys_file).read_text()) if settings.api_keys_file else {}
    keyring = KeyRing.build(keys_file=from_file, default_keys=settings.api_keys, dev=settings.dev)
    if not len(keyring):
        raise ValueError("no API keys configured: pass --api-key, --api-keys-file or --dev")
    return keyring


def build_app(
    settings: Settings,
    *,
    registry: CollectorRegistry,
    worker_pool: WorkerPool,
    cold_store: ColdStore | None = None,
    keyring: KeyRing | None = None,
) -> web.Application:
    """The API box application (the admin app with /metrics is `build_admin_app`)."""
    metrics = build_metrics(registry)
    register_worker_calls(registry, lambda: worker_pool.call_counts)
    runner = TurnRunner(
        settings=settings,
        pool=worker_pool,
        store=SessionStore(settings.session_store_bytes),
        cold=cold_store if cold_store is not None else _cold_store(settings, metrics, registry),
        metrics=metrics,
    )
    tasks = TaskSet()
    state = BoxState(
        settings=settings,
        runner=runner,
        keyring=keyring if keyring is not None else load_keyring(settings),
        metrics=metrics,
        tasks=tasks,
        handoffs=SealedHandoffs(
            runner.cold if settings.sealed_handoff and isinstance(runner.cold, RedisColdStore) else None,
            metrics=metrics,
            ttl_seconds=settings.sealed_handoff_ttl_seconds,
            max_bytes=settings.sealed_handoff_max_bytes,
        ),
        resumes=Resumes(
            _parking_lot(settings),
            metrics=metrics,
            release=lambda cache_key: tasks.spawn(worker_pool.drop(cache_key)),
        ),
    )
    app = web.Application(
        middlewares=[_request_id_middleware, inflight_middleware, _errors_middleware, _auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[STATE] = state
    app[INFLIGHT] = InFlight()
    _routes(app)
    app.on_response_prepare.append(_box_header)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


def _parking_lot(settings: Settings) -> ParkingLot | None:
    if settings.ws_resume_grace_seconds <= 0:
        return None
    return ParkingLot(
        grace_seconds=settings.ws_resume_grace_seconds,
        max_entries=settings.ws_resume_max_connections,
        max_bytes=settings.ws_resume_max_bytes,
    )


def _cold_store(settings: Settings, metrics: BoxMetrics, registry: CollectorRegistry) -> ColdStore:
    if not settings.redis_url:
        # No Redis configured is not "Redis down": without this gauge the TetherRedisUnreachable alert
        # (tether_box_redis_up == 0) stays silent for a box that runs without a cold store by design.
        registry.unregister(metrics.redis_up)
        return NullColdStore()
    return RedisColdStore.from_url(
        settings.redis_url,
        metrics=metrics,
        prefix=settings.redis_prefix,
        ttl_seconds=settings.redis_ttl_seconds,
        op_timeout=settings.redis_timeout_seconds,
        max_queue=settings.write_behind_queue,
        max_bytes=settings.write_behind_bytes,
        batch=settings.write_behind_batch,
        flush_timeout=settings.write_behind_flush_seconds,
    )


def _routes(app: web.Application) -> None:
    app.router.add_get("/v1/responses", http.responses_get)
    app.router.add_post("/v1/responses", http.responses_post)
    app.router.add_post("/v1/responses/compact", http.compact_post)
    app.router.add_get("/v1/responses/{response_id}", http.response_get)
    app.router.add_delete("/v1/responses/{response_id}", http.response_delete)
    app.router.add_get("/v1/responses/{response_id}/input_items", http.input_items_get)
    app.router.add_get("/v1/models", http.models_get)
    app.router.add_get("/livez", http.livez)
    app.router.add_get("/readyz", http.readyz)


def build_admin_app(registry: CollectorRegistry, box: web.Application) -> web.Application:
    """The admin port: /metrics, and /livez and /readyz of `box`."""

    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def readyz(request: web.Request) -> web.StreamResponse:
        state = box[STATE]
        ok = state.ready and not state.draining
        return web.Response(status=200 if ok else 503, text="ready\n" if ok else "not ready\n")

    admin = web.Application()
    admin.router.add_get("/metrics", metrics)
    admin.router.add_get("/livez", http.livez)
    admin.router.add_get("/readyz", readyz)
    return admin


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except BoxError as exc:
        return http_error_response(exc, state.metrics)
    except Exception as exc:  # a bug: 500 without details (logged by as_box_error)
        return http_error_response(as_box_error(exc), state.metrics)


@web.middleware
async def _request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Outermost, so that every response (errors included) and every log line of the request carry it;
    # the header itself is added in _box_header, which runs when the response is prepared.
    request_id = request_id_from(request.headers.get("X-Request-Id"))
    request[REQUEST_ID_KEY] = request_id
    token = REQUEST_ID.set(request_id)
    try:
        return await handler(request)
    finally:
        REQUEST_ID.reset(token)


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/v1/"):
        state = request.app[STATE]
        request[TENANT] = state.keyring.tenant_for(request.headers.get("Authorization"))
    return await handler(request)


async def _box_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Tether-Box"] = request.app[STATE].settings.box_id
    request_id = request.get(REQUEST_ID_KEY)  # the context variable is already reset for plain responses
    if request_id is not None:
        response.headers["X-Request-Id"] = request_id


async def _startup(app: web.Application) -> None:
    state = app[STATE]
    await state.runner.pool.start()
    cold = state.runner.cold
    if isinstance(cold, RedisColdStore) and not await cold.start():
        _LOG.warning("Redis does not answer: serving without cold restores until it does")
    state.ready = True


async def _shutdown(app: web.Application) -> None:
    """Close every WebSocket with 1012 (the SDK reconnects) and give them a moment to finish."""
    state = app[STATE]
    state.ready = False
    connections = list(state.connections)
    for conn in connections:
        conn.close()
    if connections:
        grace = state.settings.shutdown_grace_seconds
        waits = [asyncio.create_task(conn.wait_closed()) for conn in connections]
        _, pending = await asyncio.wait(waits, timeout=grace)
        for task in pending:
            task.cancel()


async def _cleanup(app: web.Application) -> None:
    state = app[STATE]
    state.resumes.close()  # before the tasks close: releasing parked chains spawns DropSession calls
    await state.tasks.close()
    await state.runner.cold.close()
    await state.runner.pool.close()

"""HTTP handlers: POST /v1/responses (JSON, or SSE with stream:true), GET/DELETE /v1/responses/{id},
GET /v1/responses/{id}/input_items, POST /v1/responses/compact, GET /v1/models, /livez, /readyz; and the
WebSocket upgrade on GET /v1/responses.

HTTP full-context (no previous_response_id, store:false) is the honest stateless baseline: the whole body
is parsed, every item tokenized, and the whole chain goes to the worker with no cache key, so the
worker's block-hash prefix cache is what saves prefill. With store:true (the HTTP default) the response
is kept, and a later `previous_response_id` sends only the new tokens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import web

from api_box.core.chain import render_items
from api_box.core.compaction import compact_items
from api_box.core.errors import (
    InvalidValue,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedParameter,
    WebSocketUnavailable,
)
from api_box.core.events import Event, Usage
from api_box.core.protocol import CreateRequest, parse_create
from api_box.core.sealed import HANDOFF_KEY_HEADER, derive, parse_handoff_key
from api_box.core.store import ResponseRecord
from api_box.io.errors import ClientGone, http_error_response
from api_box.io.metrics import CLIENT_TO_SERVER, SERVER_TO_CLIENT
from api_box.io.state import STATE, TENANT, BoxState
from api_box.io.turns import new_id
from api_box.io.ws import WsConnection
from api_box.io.wsdeflate import DeflateWebSocketResponse

_JSON = "application/json"
_LOG = logging.getLogger("api_box.http")


async def _read_body(request: web.Request, state: BoxState) -> bytes:
    limit = state.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    try:
        async with asyncio.timeout(state.settings.body_timeout_seconds):
            body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.") from None
    except TimeoutError:
        raise RequestTimeout("The request body did not arrive in time.") from None
    return body


def _json(state: BoxState, payload: Any, *, mode: str | None = None, status: int = 200) -> web.Response:
    body = orjson.dumps(payload)
    if mode is not None:
        state.metrics.bytes.labels(mode, SERVER_TO_CLIENT).inc(len(body))
    return web.Response(status=status, body=body, content_type=_JSON)


async def responses_get(request: web.Request) -> web.StreamResponse:
    """GET /v1/responses: the WebSocket upgrade (anything else is 426)."""
    state = request.app[STATE]
    ws = DeflateWebSocketResponse(
        deflate=state.settings.deflate,
        max_msg_size=state.settings.max_frame_bytes,
        heartbeat=state.settings.ws_heartbeat_seconds,
        decode_text=False,
    )
    if not ws.can_prepare(request).ok:
        raise web.HTTPUpgradeRequired(text="GET /v1/responses is the WebSocket endpoint; use POST for HTTP.")
    _check_websocket_capacity(state)
    raw_key = request.headers.get(HANDOFF_KEY_HEADER)
    handoff_key = derive(parse_handoff_key(raw_key)) if raw_key is not None else None  # 400 if malformed
    await ws.prepare(request)
    state.metrics.websocket_deflate.labels("yes" if ws.deflate is not None else "no").inc()
    transport = request.transport
    conn = WsConnection(
        ws,
        tenant=request[TENANT],
        settings=state.settings,
        runner=state.runner,
        tasks=state.tasks,
        abort=transport.abort if transport is not None else lambda: None,
        handoff=state.handoffs.for_key(handoff_key),
        resume=state.resumes.ticket(request[TENANT], handoff_key),
    )
    state.connections.add(conn)
    try:
        await conn.serve()
    finally:
        state.connections.discard(conn)
    return ws


def _check_websocket_capacity(state: BoxState) -> None:
    """Raise WebSocketUnavailable (426) when the box cannot take another WebSocket: clients that offer
    WebSocket mode first, such as the Codex CLI, fall back to HTTP on a 426 at the upgrade."""
    if state.draining:
        raise WebSocketUnavailable(
            "This server is draining and takes no new WebSockets; send the request over HTTP "
            "(POST /v1/responses) or reconnect."
        )
    if len(state.connections) >= state.settings.ws_max_connections:
        raise WebSocketUnavailable(
            f"This server holds its limit of {state.settings.ws_max_connections} WebSockets; send the "
            "request over HTTP (POST /v1/responses)."
        )


async def responses_post(request: web.Request) -> web.StreamResponse:
    """POST /v1/responses: JSON, or SSE with stream:true."""
    state = request.app[STATE]
    received_at = time.monotonic()
    body = await _read_body(request, state)
    create = parse_create(body, state.settings.limits, websocket=False)
    mode = "sse" if create.stream else "http"
    state.metrics.bytes.labels(mode, CLIENT_TO_SERVER).inc(len(body))
    if create.stream:
        return await _sse(request, state, create, received_at, len(body))

    async def discard(_: Event) -> None:
        return None

    result = await state.runner.run(
        create,
        tenant=request[TENANT],
        mode=mode,
        emit=discard,
        received_at=received_at,
        request_bytes=len(body),
    )
    if result.error is not None:
        return http_error_response(result.error, state.metrics)
    return _json(state, result.resource, mode=mode)


async def _sse(
    request: web.Request, state: BoxState, create: CreateRequest, received_at: float, size: int
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    counter = state.metrics.bytes.labels("sse", SERVER_TO_CLIENT)

    async def emit(event: Event) -> None:
        if not response.prepared:
            await response.prepare(request)
        chunk = b"event: %s\ndata: %s\n\n" % (event["type"].encode(), orjson.dumps(event))
        counter.inc(len(chunk))
        await _write(request, response, chunk, state.settings.send_timeout_seconds)

    # A refusal before the first event raises and becomes a plain JSON error (the stream never started).
    try:
        await state.runner.run(
            create, tenant=request[TENANT], mode="sse", emit=emit, received_at=received_at, request_bytes=size
        )
        done = b"data: [DONE]\n\n"
        counter.inc(len(done))
        await _write(request, response, done, state.settings.send_timeout_seconds)
        await response.write_eof()
    except ConnectionError:
        if not response.prepared:
            raise
        _LOG.info("SSE client went away before the end of its response")
    return response


async def _write(
    request: web.Request, response: web.StreamResponse, chunk: bytes, stall_after: float
) -> None:
    """One SSE chunk; a client that went away, or took no bytes for `stall_after` seconds, is ClientGone (a
    stalled one is dropped, so that it holds neither the turn nor the worker stream)."""
    try:
        async with asyncio.timeout(stall_after):
            await response.write(chunk)
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        raise ClientGone(f"the client took no bytes for {stall_after:g} s") from None
    except ConnectionError as exc:
        raise ClientGone(str(exc)) from exc


async def response_get(request: web.Request) -> web.StreamResponse:
    """GET /v1/responses/{id}: a stored (store:true) response of this tenant."""
    state = request.app[STATE]
    record = await _stored(request, state)
    return web.Response(body=record.resource, content_type=_JSON)


async def response_delete(request: web.Request) -> web.StreamResponse:
    """DELETE /v1/responses/{id}."""
    state = request.app[STATE]
    response_id = request.match_info["response_id"]
    runner = state.runner
    record = runner.store.delete(request[TENANT], response_id)
    # The response may live only in the cold store (created on another box): deleted there, it is found.
    in_cold = await runner.cold.delete(request[TENANT], response_id) if runner.cold.enabled else False
    if record is None and not in_cold:
        raise NotFound(f"No response found with id '{response_id}'.", param="response_id")
    if record is not None:
        state.metrics.sessions.set(len(runner.store))
        state.metrics.session_store_bytes.set(runner.store.nbytes)
        cache_key = record.ref.chain.cache_key
        if not runner.store.holds_chain(cache_key):
            state.tasks.spawn(runner.pool.drop(cache_key))
    return _json(state, {"id": response_id, "object": "response.deleted", "deleted": True})


async def input_items_get(request: web.Request) -> web.StreamResponse:
    """GET /v1/responses/{id}/input_items (the items sent with that response; order, limit, after)."""
    state = request.app[STATE]
    record = await _stored(request, state)
    items: list[dict[str, Any]] = orjson.loads(record.input_items or b"[]")
    query = request.rel_url.query
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidValue("'order' must be 'asc' or 'desc'.", param="order")
    limit = _limit(query.get("limit", "20"))
    if order == "desc":
        items.reverse()
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return _json(
        state,
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        },
    )


def _limit(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidValue("'limit' must be an integer between 1 and 100.", param="limit")
    return int(raw)


async def _stored(request: web.Request, state: BoxState) -> ResponseRecord:
    response_id = request.match_info["response_id"]
    tenant = request[TENANT]
    record = state.runner.store.get(tenant, response_id) or await state.runner.restore(tenant, response_id)
    if record is None:
        raise NotFound(f"No response found with id '{response_id}'.", param="response_id")
    return record


async def compact_post(request: web.Request) -> web.StreamResponse:
    """POST /v1/responses/compact: one `compaction` item holding the compacted window, sealed for this
    tenant (api_box/core/compaction.py); compaction items in the input are opened first."""
    state = request.app[STATE]
    tenant = request[TENANT]
    parsed = parse_create(await _read_body(request, state), state.settings.limits, websocket=False)
    if parsed.previous_response_id is not None:
        raise UnsupportedParameter(
            "compact takes the items to compact as 'input'; previous_response_id is not supported.",
            param="previous_response_id",
        )
    create = state.runner.open_compactions(parsed, tenant)
    kept = compact_items(create.input)
    usage = Usage(input_tokens=len(render_items(create.input)), output_tokens=len(render_items(kept)))
    item = {
        "id": new_id("cmp"),
        "type": "compaction",
        "encrypted_content": state.runner.seal_compaction(kept, tenant),
    }
    return _json(
        state,
        {
            "id": new_id("resp"),
            "object": "response.compaction",
            "output": [item],
            "created_at": int(time.time()),
            "usage": usage.to_json(),
        },
    )


async def models_get(request: web.Request) -> web.StreamResponse:
    """GET /v1/models."""
    state = request.app[STATE]
    await state.runner.pool.describe()  # workers that started after this box are listed too
    names = state.runner.model_names()
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "tether"} for m in names]
    return _json(state, {"object": "list", "data": data})


async def livez(request: web.Request) -> web.StreamResponse:
    """Liveness: the process serves requests."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.StreamResponse:
    """Readiness: started and not draining."""
    state = request.app[STATE]
    if state.ready and not state.draining:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="draining\n" if state.draining else "starting\n")

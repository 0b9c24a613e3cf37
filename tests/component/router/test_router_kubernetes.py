"""Kubernetes membership against a local server that speaks the API's list and chunked-watch protocol.

The official client is not patched: it talks HTTP to `FakeKubeAPI` (aiohttp on port 0), which serves
`GET /apis/discovery.k8s.io/v1/namespaces/<ns>/endpointslices` as a list (with `metadata.resourceVersion`)
or, with `watch=true`, as a chunked stream of `{"type", "object"}` lines replayed from `resourceVersion`.
An expired resourceVersion gets what a real API server sends: HTTP 200 and an ERROR event carrying a
410 Status — or, in `gone="status"` mode, an HTTP 410 answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import StartBoxes, StartRouter, router_settings

from router.core.membership import Member
from router.io.sources import KubernetesSource

NAMESPACE = "tether"
SERVICE = "api-box"
TIMEOUT = aiohttp.ClientTimeout(total=10)


def endpoint(pod: str, ip: str, *, ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    return {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": ready or terminating, "terminating": terminating},
        "targetRef": {"kind": "Pod", "name": pod, "namespace": NAMESPACE, "uid": f"uid-{pod}-{ip}"},
        "nodeName": "kind-worker",
    }


def endpoint_slice(name: str, endpoints: list[dict[str, Any]], port: int = 8080) -> dict[str, Any]:
    return {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": SERVICE, "endpointslice.kubernetes.io/managed-by": "x"},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "protocol": "TCP", "port": port}],
    }


def gone_status(version: int, oldest: int) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"too old resource version: {version} ({oldest})",
        "reason": "Expired",
        "code": 410,
    }


class FakeKubeAPI:
    """EndpointSlices of one namespace, a change history with resourceVersions, and live watches."""

    def __init__(self, gone: str = "event") -> None:
        self.gone = gone
        self.version = 100
        self.oldest = 0  # watches from a resourceVersion below this are expired (compaction)
        self.slices: dict[str, dict[str, Any]] = {}
        self.history: list[tuple[int, dict[str, Any]]] = []
        self.requests: list[dict[str, str]] = []
        self.watches: list[asyncio.Queue[bytes | None]] = []
        self.request_seen = asyncio.Condition()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        for queue in self.watches:
            queue.put_nowait(None)
        assert self.runner is not None
        await self.runner.cleanup()

    # ------------------------------------------------------------------ changes (the test drives these)
    def put(self, obj: dict[str, Any]) -> int:
        name = obj["metadata"]["name"]
        kind = "MODIFIED" if name in self.slices else "ADDED"
        return self._record(kind, obj)

    def delete(self, name: str) -> int:
        return self._record("DELETED", self.slices[name])

    def _record(self, kind: str, obj: dict[str, Any]) -> int:
        self.version += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.version)
        if kind == "DELETED":
            self.slices.pop(stored["metadata"]["name"])
        else:
            self.slices[stored["metadata"]["name"]] = stored
        event = {"type": kind, "object": stored}
        self.history.append((self.version, event))
        for queue in self.watches:
            queue.put_nowait(json.dumps(event).encode() + b"\n")
        return self.version

    def end_watches(self) -> None:
        """The server closes every open watch (as it does after timeoutSeconds)."""
        for queue in self.watches:
            queue.put_nowait(None)

    def compact(self) -> None:
        """Other objects changed (the resourceVersion moved on) and history was compacted: a watch from any
        resourceVersion before the current one is expired (410)."""
        self.version += 1
        self.oldest = self.version
        self.history.clear()

    def bookmark(self) -> None:
        self.version += 1
        metadata = {"resourceVersion": str(self.version)}
        line = {"type": "BOOKMARK", "object": {"kind": "EndpointSlice", "metadata": metadata}}
        for queue in self.watches:
            queue.put_nowait(json.dumps(line).encode() + b"\n")

    def watch_requests(self) -> list[dict[str, str]]:
        return [r for r in self.requests if r.get("watch") in ("true", "True", "1")]

    def list_requests(self) -> list[dict[str, str]]:
        return [r for r in self.requests if r.get("watch") not in ("true", "True", "1")]

    # ------------------------------------------------------------------ the API
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        self.requests.append(params)
        async with self.request_seen:
            self.request_seen.notify_all()
        assert params.get("labelSelector") == f"kubernetes.io/service-name={SERVICE}"
        if params.get("watch") not in ("true", "True", "1"):
            body = {
                "kind": "EndpointSliceList",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": str(self.version)},
                "items": list(self.slices.values()),
            }
            return web.json_response(body)
        since = int(params.get("resourceVersion") or 0)
        if since < self.oldest:
            if self.gone == "status":
                return web.json_response(gone_status(since, self.oldest), status=410)
            response = await self._stream(request)
            await response.write(
                json.dumps({"type": "ERROR", "object": gone_status(since, self.oldest)}).encode()
            )
            await response.write(b"\n")
            await response.write_eof()
            return response
        return await self._watch(request, since, float(params.get("timeoutSeconds", 300)))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        return response

    async def _watch(self, request: web.Request, since: int, seconds: float) -> web.StreamResponse:
        response = await self._stream(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        for version, event in self.history:
            if version > since:
                queue.put_nowait(json.dumps(event).encode() + b"\n")
        self.watches.append(queue)
        try:
            async with asyncio.timeout(seconds):
                while (line := await queue.get()) is not None:
                    await response.write(line)
        except TimeoutError:
            pass
        finally:
            self.watches.remove(queue)
        with contextlib.suppress(ConnectionError):  # the client may have gone first
            await response.write_eof()
        return response


@pytest.fixture(params=["event", "status"])
async def api(request: pytest.FixtureRequest) -> AsyncIterator[FakeKubeAPI]:
    server = FakeKubeAPI(gone=request.param)
    await server.start()
    yield server
    await server.stop()


class Published:
    """Collects what a source publishes; `next()` waits for the next member set."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[list[Member]] = asyncio.Queue()

    def __call__(self, members: Sequence[Member]) -> None:
        self.queue.put_nowait(list(members))

    async def next(self) -> list[Member]:
        async with asyncio.timeout(15):
            return await self.queue.get()


async def watches_beyond(api: FakeKubeAPI, count: int) -> None:
    """Wait until the client has made more than `count` watch requests."""
    async with asyncio.timeout(15), api.request_seen:
        await api.request_seen.wait_for(lambda: len(api.watch_requests()) > count)


async def test_endpointslice_watch(api: FakeKubeAPI) -> None:
    api.put(
        endpoint_slice("api-box-a1", [endpoint("api-box-0", "10.1.0.1"), endpoint("api-box-1", "10.1.0.2")])
    )
    source = KubernetesSource(SERVICE, NAMESPACE, port_name="http", api_url=api.url, watch_timeout=60)
    published = Published()
    task = asyncio.create_task(source.run(published))
    try:
        first = await published.next()
        assert [(m.name, m.host, m.port) for m in first] == [
            ("api-box-0", "10.1.0.1", 8080),
            ("api-box-1", "10.1.0.2", 8080),
        ]
        await watches_beyond(api, 0)
        assert api.watch_requests()[-1]["resourceVersion"] == "101"  # watch from the list's version
        assert api.watch_requests()[-1]["allowWatchBookmarks"] in ("true", "True")

        # api-box-1 starts terminating: it leaves the ring for new connections
        leaving = endpoint("api-box-1", "10.1.0.2", ready=False, terminating=True)
        api.put(endpoint_slice("api-box-a1", [endpoint("api-box-0", "10.1.0.1"), leaving]))
        assert [m.name for m in await published.next()] == ["api-box-0"]

        # a second slice brings api-box-2; api-box-1 is gone
        api.put(endpoint_slice("api-box-b2", [endpoint("api-box-2", "10.1.0.3")]))
        assert [m.name for m in await published.next()] == ["api-box-0", "api-box-2"]

        # api-box-0 restarts with a new IP: same member (same ring place), new address
        version = api.put(endpoint_slice("api-box-a1", [endpoint("api-box-0", "10.1.0.9")]))
        members = await published.next()
        assert [(m.name, m.host) for m in members] == [("api-box-0", "10.1.0.9"), ("api-box-2", "10.1.0.3")]

        # the server ends the watch: the client resumes from the last resourceVersion, no relist
        assert api.watch_requests()[-1]["resourceVersion"] == "101"
        api.bookmark()  # delivered before the end of the stream: the client resumes from it
        api.end_watches()
        await watches_beyond(api, 1)
        assert api.watch_requests()[-1]["resourceVersion"] == str(api.version)
        assert api.version == version + 1
        assert len(api.list_requests()) == 1
        api.delete("api-box-b2")
        assert [m.name for m in await published.next()] == ["api-box-0"]

        # history compacted: the resumed watch is expired (410) and the client relists
        api.put(endpoint_slice("api-box-c3", [endpoint("api-box-3", "10.1.0.4")]))
        assert [m.name for m in await published.next()] == ["api-box-0", "api-box-3"]
        api.compact()
        api.end_watches()
        assert [m.name for m in await published.next()] == ["api-box-0", "api-box-3"]  # from the relist
        assert len(api.list_requests()) == 2
        assert source.relists == 2
        expired = api.watch_requests()[2]  # the resumed watch that got 410
        assert int(expired["resourceVersion"]) < api.oldest
        await watches_beyond(api, 3)
        assert int(api.watch_requests()[3]["resourceVersion"]) >= api.oldest  # from the relist's version
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_router_routes_through_kubernetes_membership(
    boxes: StartBoxes, routers: StartRouter, api: FakeKubeAPI
) -> None:
    started = await boxes(3, prefix="api-box")
    for box in started:  # one slice per box: each test box listens on its own port
        api.put(endpoint_slice(f"slice-{box.name}", [endpoint(box.name, "127.0.0.1")], port=box.port))
    source = KubernetesSource(SERVICE, NAMESPACE, api_url=api.url, watch_timeout=60)
    running = await routers(router_settings("unused=127.0.0.1:1"), source=source)
    async with asyncio.timeout(15):
        while len(running.router.ring) < 3:
            await running.router.wait_ring_change()
    assert running.router.ring.members == ("api-box-0", "api-box-1", "api-box-2")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for i in range(10):
            key = f"k{i}"
            async with session.post(
                f"{running.url}/v1/responses", data=b"{}", headers={"X-Session-Id": key}
            ) as r:
                assert (await r.json())["box"] == running.router.ring.lookup(key)
    # a terminating box leaves the ring: its keys walk to their successors
    leaving = endpoint("api-box-1", "127.0.0.1", ready=False, terminating=True)
    api.put(endpoint_slice("slice-api-box-1", [leaving], port=started[1].port))
    async with asyncio.timeout(15):
        while "api-box-1" in running.router.ring:
            await running.router.wait_ring_change()
    assert running.router.ring.members == ("api-box-0", "api-box-2")

"""Membership sources: each one's `run(publish)` calls `publish(members)` whenever the member set changes,
until cancelled.

- StaticSource: the `--boxes` list, published once.
- DnsSource: polls the A/AAAA records of a headless Service with `loop.getaddrinfo` (no thread of ours). A
  name that does not exist (no ready pods) publishes an empty set; other resolver errors keep the last set.
- KubernetesSource: lists, then watches, the EndpointSlices of a Service with the official `kubernetes`
  client in one thread (it is synchronous). It resumes each watch from the last resourceVersion seen
  (bookmarks included) and relists when the server answers 410 Gone, either as an HTTP status or as an
  ERROR event. Stopping shuts the watch's socket down, so the thread ends promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from router.core.membership import EndpointSlices, Member, dns_members, resource_version

__all__ = ["DnsSource", "KubernetesSource", "MembershipSource", "Publish", "StaticSource"]

log = logging.getLogger("router.membership")
Publish = Callable[[Sequence[Member]], None]
Resolver = Callable[[str, int], Awaitable[list[tuple[str, int]]]]
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


class MembershipSource(Protocol):
    """Something that learns the member set and publishes it."""

    async def run(self, publish: Publish) -> None:
        """Publish the member set on every change until cancelled (a static source may return)."""


class StaticSource:
    """A fixed member list."""

    def __init__(self, members: Sequence[Member]) -> None:
        self._members = tuple(members)

    async def run(self, publish: Publish) -> None:
        publish(self._members)


async def _getaddrinfo(host: str, port: int) -> list[tuple[str, int]]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(str(info[4][0]), int(info[4][1])) for info in infos]


class DnsSource:
    """Poll `host` every `interval` seconds; members are the resolved addresses on `port`."""

    def __init__(self, host: str, port: int, interval: float, resolve: Resolver | None = None) -> None:
        self._host, self._port, self._interval = host, port, interval
        self._resolve = resolve or _getaddrinfo

    async def run(self, publish: Publish) -> None:
        last: tuple[Member, ...] | None = None
        while True:
            members = await self._poll()
            if members is not None and members != last:
                publish(members)
                last = members
            await asyncio.sleep(self._interval)

    async def _poll(self) -> tuple[Member, ...] | None:
        try:
            async with asyncio.timeout(max(self._interval, 5.0)):
                return dns_members(await self._resolve(self._host, self._port))
        except socket.gaierror as exc:
            if exc.errno in _NO_SUCH_NAME:
                log.warning("dns: %s has no records: the ring is empty", self._host)
                return ()
            log.warning("dns: resolving %s failed (%s): keeping the last members", self._host, exc)
        except (OSError, TimeoutError) as exc:
            log.warning("dns: resolving %s failed (%r): keeping the last members", self._host, exc)
        return None


def pod_namespace() -> str:
    """The namespace of the pod we run in (service account file), else `default`."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


class KubernetesSource:
    """Watch the EndpointSlices of Service `service` (label `kubernetes.io/service-name`)."""

    CONNECT_TIMEOUT = 5.0
    STOP_TIMEOUT = 5.0
    LIST_TIMEOUT = 30.0
    MAX_BACKOFF = 30.0

    def __init__(
        self,
        service: str,
        namespace: str | None = None,
        *,
        port_name: str | None = None,
        api_url: str | None = None,
        watch_timeout: float = 300.0,
    ) -> None:
        self._service = service
        self._namespace = namespace or pod_namespace()
        self._port_name = port_name
        self._api_url = api_url
        self._watch_timeout = max(1, int(watch_timeout))
        self._selector = f"kubernetes.io/service-name={service}"
        self._stop = threading.Event()
        self._watch: Any = None  # the kubernetes Watch in progress (stopped from the loop thread)
        self.relists = 0  # how many times the full list was fetched (observability for tests and logs)

    async def run(self, publish: Publish) -> None:
        loop = asyncio.get_running_loop()
        self._stop.clear()
        api = await asyncio.to_thread(self._api)
        died: asyncio.Future[None] = loop.create_future()

        def send(members: tuple[Member, ...]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(publish, members)

        def ended() -> None:
            if not died.done():
                died.set_result(None)

        def body() -> None:
            try:
                self._watch_forever(api, send)
            finally:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(ended)

        thread = threading.Thread(target=body, name=f"k8s-watch-{self._service}", daemon=True)
        thread.start()
        try:
            await died
        finally:
            await self._stop_thread(thread)
            api.api_client.close()

    async def _stop_thread(self, thread: threading.Thread) -> None:
        """Stop the watch thread: shut the current watch's socket down (again, should a new watch have
        started in between) until the thread has ended or the stop budget is spent."""
        self._stop.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.STOP_TIMEOUT
        while thread.is_alive() and loop.time() < deadline:
            watch = self._watch
            if watch is not None:
                watch.stop()  # shuts the socket down: a blocked read returns at once
            await asyncio.to_thread(thread.join, 0.05)
        if thread.is_alive():
            log.warning(
                "k8s: the watch thread did not stop within %.0f s (left as a daemon)", self.STOP_TIMEOUT
            )

    def _api(self) -> Any:
        from kubernetes import client  # imported only in Kubernetes mode: it is slow to import
        from kubernetes import config as kube_config

        config: Any = kube_config  # the client is untyped

        configuration = client.Configuration()
        if self._api_url:
            configuration.host = self._api_url
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)
        return client.DiscoveryV1Api(client.ApiClient(configuration))

    # ------------------------------------------------------------------ in the watch thread
    def _watch_forever(self, api: Any, send: Callable[[tuple[Member, ...]], None]) -> None:
        from kubernetes.client.exceptions import ApiException

        view = EndpointSlices(self._port_name)
        version: str | None = None
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list(api, view)
                    send(view.members())
                version = self._watch_once(api, view, version, send)
                backoff = 0.5
            except ApiException as exc:
                if exc.status == 410:
                    log.info("k8s: resourceVersion %s expired (410): relisting", version)
                    version = None
                    continue
                log.warning("k8s: %s %s; retrying in %.1f s", exc.status, exc.reason, backoff)
            except Exception as exc:  # network errors of every kind: urllib3, ssl, socket
                if self._stop.is_set():
                    return
                log.warning("k8s: watch failed (%r); retrying in %.1f s", exc, backoff)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.MAX_BACKOFF)

    def _list(self, api: Any, view: EndpointSlices) -> str | None:
        """List every slice (following `continue`), reset the view; returns the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            response = api.list_namespaced_endpoint_slice(
                self._namespace,
                label_selector=self._selector,
                limit=500,
                _continue=token,
                _preload_content=False,
                _request_timeout=(self.CONNECT_TIMEOUT, self.LIST_TIMEOUT),
            )
            body = json.loads(response.data)
            items.extend(body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue") or None
            if token is None:
                break
        view.reset(items)
        self.relists += 1
        log.info("k8s: listed %d EndpointSlices of %s/%s", len(items), self._namespace, self._service)
        return resource_version(body)

    def _watch_once(
        self, api: Any, view: EndpointSlices, version: str | None, send: Callable[[tuple[Member, ...]], None]
    ) -> str | None:
        """One watch request until the server ends it; returns the last resourceVersion seen."""
        from kubernetes import watch

        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        before = view.members()
        try:
            stream = self._watch.stream(
                api.list_namespaced_endpoint_slice,
                self._namespace,
                label_selector=self._selector,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_timeout,
                _request_timeout=(self.CONNECT_TIMEOUT, self._watch_timeout + 30),
            )
            for event in stream:
                if self._stop.is_set():
                    break
                obj = event.get("raw_object") or {}
                version = resource_version(obj) or version
                if view.apply(str(event.get("type")), obj):
                    members = view.members()
                    if members != before:
                        send(members)
                        before = members
        finally:
            self._watch.stop()
        return version

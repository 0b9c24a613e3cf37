"""The shaped link's plumbing: a network namespace for the client, a veth pair to the host, the relay.

    client process (namespace tbench-<pid>, 10.213.N.2/30)
        └── veth ──▶ host end 10.213.N.1/30 ── linkemu relay (delay + rate) ──▶ router on loopback

Only root can create namespaces: `unavailable()` says why not (and the benchmark skips the shaped link
with that message). Addresses come from 10.213.0.0/16, a /30 per benchmark, and are used only inside
these two interfaces. Everything is removed on exit: `ShapedLink` is a context manager, registers an
atexit hook, and `remove_stale()` deletes namespaces left by benchmarks that were killed (their pid is
gone). The `ip` calls are synchronous and short; the async shell runs them in a thread.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

PREFIX = "tbench-"
SUBNET = ipaddress.IPv4Network("10.213.0.0/16")
IP_TIMEOUT = 10.0


class NetnsError(RuntimeError):
    """A namespace or veth operation failed."""


def unavailable() -> str | None:
    """Why a shaped link cannot be built here (None when it can)."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "the shaped link needs root (network namespaces and veth pairs); run as root to include it"
    if shutil.which("ip") is None:
        return "the shaped link needs the `ip` command (iproute2)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def namespaces() -> list[str]:
    """Names of the network namespaces that exist now."""
    result = _ip("netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def remove_stale() -> list[str]:
    """Delete benchmark namespaces whose benchmark process is gone; the names removed."""
    removed = []
    for name in namespaces():
        if not name.startswith(PREFIX):
            continue
        pid_text = name.removeprefix(PREFIX).split("-")[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            _ip("netns", "delete", name, check=False)
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_subnet(seed: int) -> ipaddress.IPv4Network:
    used = _ip("-o", "-4", "addr", "show", check=False).stdout
    subnets = list(SUBNET.subnets(new_prefix=30))
    for offset in range(len(subnets)):
        candidate = subnets[(seed + offset) % len(subnets)]
        if (
            f" {candidate.network_address + 1}/" not in used
            and f" {candidate.network_address + 2}/" not in used
        ):
            return candidate
    raise NetnsError("no free /30 left in 10.213.0.0/16")


@dataclass(frozen=True, slots=True)
class Namespace:
    """A created namespace and veth pair."""

    name: str
    host_if: str
    client_if: str
    host_ip: str
    client_ip: str

    def exec_prefix(self) -> list[str]:
        """Prefix a command line with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]


class ShapedLink:
    """Creates the namespace and veth on enter, removes them on exit (and at interpreter exit)."""

    def __init__(self, tag: str = "0") -> None:
        pid = os.getpid()
        self.namespace_name = f"{PREFIX}{pid}-{tag}"
        short = f"{pid % 100000}{tag}"[:8]
        self.host_if, self.client_if = f"tbh{short}", f"tbc{short}"
        self.ns: Namespace | None = None
        self._registered = False

    def create(self) -> Namespace:
        """Build everything; NetnsError (after undoing what was built) on failure."""
        reason = unavailable()
        if reason is not None:
            raise NetnsError(reason)
        remove_stale()
        if not self._registered:
            atexit.register(self.remove)
            self._registered = True
        subnet = _free_subnet(os.getpid())
        host_ip, client_ip = str(subnet.network_address + 1), str(subnet.network_address + 2)
        try:
            self._build(subnet.prefixlen, host_ip, client_ip)
        except BaseException:
            self.remove()
            raise
        self.ns = Namespace(self.namespace_name, self.host_if, self.client_if, host_ip, client_ip)
        return self.ns

    def _build(self, prefixlen: int, host_ip: str, client_ip: str) -> None:
        ns = self.namespace_name
        _ip("netns", "add", ns)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.client_if)
        _ip("link", "set", self.client_if, "netns", ns)
        _ip("addr", "add", f"{host_ip}/{prefixlen}", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", ns, "addr", "add", f"{client_ip}/{prefixlen}", "dev", self.client_if)
        _ip("-n", ns, "link", "set", self.client_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")

    def remove(self) -> None:
        """Delete the veth pair and the namespace (idempotent; errors are ignored)."""
        with contextlib.suppress(Exception):
            if self.host_if in _ip("-o", "link", "show", check=False).stdout:
                _ip("link", "delete", self.host_if, check=False)
        with contextlib.suppress(Exception):
            if self.namespace_name in namespaces():
                _ip("netns", "delete", self.namespace_name, check=False)
        self.ns = None

    def __enter__(self) -> Namespace:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.remove()


def in_namespace(ns: Namespace | None, argv: Sequence[str]) -> list[str]:
    """`argv`, run inside `ns` when one is given."""
    return [*ns.exec_prefix(), *argv] if ns is not None else list(argv)

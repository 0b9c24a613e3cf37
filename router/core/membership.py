"""Ring members and the three ways to learn them, as pure functions over already-fetched data.

- Static: `parse_boxes("box-0=127.0.0.1:8001,box-1=127.0.0.1:8002@2")` (`@weight` optional).
- DNS: `dns_members` turns the A/AAAA records of a headless Service into members named `ip:port`; a pod that
  restarts with a new IP is a new member (its keys move), which is why Kubernetes mode exists.
- Kubernetes: `EndpointSlices` folds the list and watch events of a Service's EndpointSlices into members
  named after the pod (`targetRef.name`), so a StatefulSet pod keeps its ring place across restarts even
  when its IP changes. An endpoint is a member when it is not terminating and ready (`ready` unset: use
  `serving`; both unset: ready, as the EndpointSlice API says to interpret nil). A terminating pod leaves
  the ring for new connections; its open connections are drained by the box itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from router.core.errors import ConfigError

__all__ = [
    "EndpointSlices",
    "Member",
    "dns_members",
    "parse_boxes",
    "parse_host_port",
    "resource_version",
    "ring_weights",
]

_WATCH_CHANGES = frozenset({"ADDED", "MODIFIED"})


@dataclass(frozen=True, slots=True, order=True)
class Member:
    """One API box: its ring identity, where to connect, and its ring weight."""

    name: str
    host: str
    port: int
    weight: float = 1.0

    @property
    def address(self) -> str:
        """`host:port`, IPv6 hosts in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port). Raises ConfigError."""
    host, colon, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or any(c.isspace() for c in host) or not port_text.isdigit():
        raise ConfigError(f"expected host:port, got {text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ConfigError(f"port out of range in {text!r}")
    return host, port


def parse_boxes(spec: str) -> tuple[Member, ...]:
    """Parse a static member list `name=host:port[@weight],...`. Raises ConfigError."""
    members: dict[str, Member] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, equals, rest = item.partition("=")
        if not equals or not name.strip():
            raise ConfigError(f"expected name=host:port[@weight], got {item!r}")
        address, at, weight_text = rest.partition("@")
        try:
            weight = float(weight_text) if at else 1.0
        except ValueError:
            raise ConfigError(f"invalid weight in {item!r}") from None
        if not (math.isfinite(weight) and weight > 0):
            raise ConfigError(f"weight must be a finite number > 0 in {item!r}")
        name = name.strip()
        if name in members:
            raise ConfigError(f"box {name!r} is listed twice")
        host, port = parse_host_port(address)
        members[name] = Member(name, host, port, weight)
    if not members:
        raise ConfigError("the static box list is empty")
    return tuple(sorted(members.values()))


def dns_members(addresses: Iterable[tuple[str, int]]) -> tuple[Member, ...]:
    """Members for resolved (ip, port) pairs, named `ip:port`, deduplicated and sorted."""
    unique = {(host, port) for host, port in addresses}
    return tuple(sorted(Member(Member("", host, port).address, host, port) for host, port in unique))


def ring_weights(members: Iterable[Member]) -> dict[str, float]:
    """The ring's view of a member set: name → weight."""
    return {member.name: member.weight for member in members}


# ---------------------------------------------------------------------------------------------- Kubernetes
def _map(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _seq(value: object) -> Sequence[object]:
    return value if isinstance(value, list | tuple) else ()


def _condition(conditions: Mapping[str, object], name: str) -> bool | None:
    value = conditions.get(name)
    return value if isinstance(value, bool) else None


def resource_version(obj: Mapping[str, object]) -> str | None:
    """`metadata.resourceVersion` of a Kubernetes object or list, if present."""
    value = _map(obj.get("metadata")).get("resourceVersion")
    return value if isinstance(value, str) and value else None


def _slice_port(slice_obj: Mapping[str, object], port_name: str | None) -> int | None:
    for port in map(_map, _seq(slice_obj.get("ports"))):
        number = port.get("port")
        if isinstance(number, int) and (port_name is None or port.get("name") == port_name):
            return number
    return None


def _eligible(conditions: Mapping[str, object]) -> bool:
    if _condition(conditions, "terminating") is True:
        return False
    ready = _condition(conditions, "ready")
    if ready is None:
        ready = _condition(conditions, "serving")
    return ready is not False


def _slice_endpoints(slice_obj: Mapping[str, object], port_name: str | None) -> list[tuple[Member, bool]]:
    """(member, eligible) for every endpoint of one EndpointSlice that has an address and the port."""
    port = _slice_port(slice_obj, port_name)
    if port is None or slice_obj.get("addressType") == "FQDN":
        return []
    found: list[tuple[Member, bool]] = []
    for endpoint in map(_map, _seq(slice_obj.get("endpoints"))):
        addresses = [a for a in _seq(endpoint.get("addresses")) if isinstance(a, str) and a]
        if not addresses:
            continue
        target = _map(endpoint.get("targetRef"))
        target_name = target.get("name")
        name = target_name if isinstance(target_name, str) and target_name else addresses[0]
        member = Member(name, addresses[0], port)
        found.append((member, _eligible(_map(endpoint.get("conditions")))))
    return found


class EndpointSlices:
    """The EndpointSlices of one Service, folded from a list and then watch events, and the ring members
    they describe. A pod listed in several slices (during a slice rewrite) counts once, eligible if any
    listing is."""

    def __init__(self, port_name: str | None = None) -> None:
        self._port_name = port_name
        self._slices: dict[str, Mapping[str, object]] = {}

    def reset(self, slices: Iterable[Mapping[str, object]]) -> None:
        """Replace everything with the items of a fresh list."""
        self._slices = {}
        for item in slices:
            self.apply("ADDED", item)

    def apply(self, event_type: str, obj: Mapping[str, object]) -> bool:
        """Fold one watch event (ADDED, MODIFIED, DELETED; others are ignored). True if it was applied."""
        name = _map(obj.get("metadata")).get("name")
        if not isinstance(name, str) or not name:
            return False
        if event_type in _WATCH_CHANGES:
            self._slices[name] = obj
        elif event_type == "DELETED":
            self._slices.pop(name, None)
        else:
            return False
        return True

    def members(self) -> tuple[Member, ...]:
        """The eligible members, sorted by name."""
        eligible: dict[str, Member] = {}
        for slice_name in sorted(self._slices):
            for member, ok in _slice_endpoints(self._slices[slice_name], self._port_name):
                if ok:
                    eligible.setdefault(member.name, member)
        return tuple(sorted(eligible.values()))

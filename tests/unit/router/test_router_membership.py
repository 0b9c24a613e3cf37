"""Static lists, DNS answers and EndpointSlice folding into ring members."""

from __future__ import annotations

from typing import Any

import pytest

from router.core.errors import ConfigError
from router.core.membership import (
    EndpointSlices,
    Member,
    dns_members,
    parse_boxes,
    parse_host_port,
    resource_version,
    ring_weights,
)


def test_parse_boxes() -> None:
    members = parse_boxes(" b=127.0.0.1:8002@2 , a=[::1]:8001,")
    assert members == (Member("a", "::1", 8001), Member("b", "127.0.0.1", 8002, 2.0))
    assert members[0].address == "[::1]:8001"
    assert ring_weights(members) == {"a": 1.0, "b": 2.0}


@pytest.mark.parametrize(
    "spec",
    ["", ",", "a", "a=", "=h:1", "a=h", "a=h:0", "a=h:70000", "a=h:x", "a=h:1@0", "a=h:1@nan", "a=h:1@x",
     "a=h:1,a=h:2", "a=h h:1"],
)  # fmt: skip
def test_parse_boxes_rejects(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_boxes(spec)


def test_parse_host_port() -> None:
    assert parse_host_port("api-box.ns.svc:8080") == ("api-box.ns.svc", 8080)
    assert parse_host_port("[fe80::1]:80") == ("fe80::1", 80)


def test_dns_members_are_named_by_address_and_deduplicated() -> None:
    members = dns_members([("10.0.0.2", 80), ("10.0.0.1", 80), ("10.0.0.2", 80), ("fd00::1", 80)])
    assert [m.name for m in members] == ["10.0.0.1:80", "10.0.0.2:80", "[fd00::1]:80"]
    assert dns_members([]) == ()


def endpoint(pod: str | None, ip: str, **conditions: bool | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "addresses": [ip],
        "conditions": {k: v for k, v in conditions.items() if v is not None},
    }
    if pod is not None:
        entry["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "ns"}
    return entry


def endpoint_slice(
    name: str, *endpoints: dict[str, Any], port: int = 8080, version: str = "1"
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": version,
            "labels": {"kubernetes.io/service-name": "api"},
        },
        "addressType": "IPv4",
        "endpoints": list(endpoints),
        "ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": port}],
    }


@pytest.mark.parametrize(
    ("conditions", "member"),
    [
        ({"ready": True, "serving": True, "terminating": False}, True),
        ({"ready": False, "serving": False, "terminating": False}, False),
        ({"ready": False, "serving": True, "terminating": True}, False),  # draining: leaves for new conns
        ({}, True),  # nil conditions read as ready
        ({"serving": True}, True),
        ({"serving": False}, False),
        ({"ready": True, "terminating": True}, False),
    ],
)
def test_endpoint_conditions(conditions: dict[str, bool], member: bool) -> None:
    view = EndpointSlices("http")
    view.reset([endpoint_slice("s1", endpoint("api-box-0", "10.0.0.1", **conditions))])
    assert bool(view.members()) is member


def test_members_are_pods_and_keep_their_identity_across_ip_changes() -> None:
    view = EndpointSlices("http")
    view.reset([endpoint_slice("s1", endpoint("api-box-0", "10.0.0.1"), endpoint("api-box-1", "10.0.0.2"))])
    assert view.members() == (Member("api-box-0", "10.0.0.1", 8080), Member("api-box-1", "10.0.0.2", 8080))
    # api-box-0 restarted with a new IP: same member name, so the same ring place
    view.apply(
        "MODIFIED", endpoint_slice("s1", endpoint("api-box-0", "10.0.0.9"), endpoint("api-box-1", "10.0.0.2"))
    )
    assert [m.name for m in view.members()] == ["api-box-0", "api-box-1"]
    assert view.members()[0].host == "10.0.0.9"


def test_slices_add_modify_delete_and_dedupe() -> None:
    view = EndpointSlices()  # first port of each slice
    assert view.apply("ADDED", endpoint_slice("s1", endpoint("p0", "10.0.0.1")))
    assert view.members()[0].port == 9090
    # the same pod in a second slice, not ready there: still a member (ready in s1)
    view.apply(
        "ADDED", endpoint_slice("s2", endpoint("p0", "10.0.0.1", ready=False), endpoint(None, "10.0.0.5"))
    )
    assert [m.name for m in view.members()] == ["10.0.0.5", "p0"]  # no targetRef: named by address
    assert view.apply("DELETED", endpoint_slice("s1"))
    assert [m.name for m in view.members()] == ["10.0.0.5"]
    assert not view.apply("BOOKMARK", {"metadata": {"resourceVersion": "9"}})
    assert not view.apply("ADDED", {"metadata": {}})


def test_slices_without_the_port_or_with_fqdn_addresses_are_skipped() -> None:
    view = EndpointSlices("grpc")
    view.reset([endpoint_slice("s1", endpoint("p0", "10.0.0.1"))])
    assert view.members() == ()
    fqdn = endpoint_slice("s2", endpoint("p1", "box.example"))
    fqdn["addressType"] = "FQDN"
    view = EndpointSlices("http")
    view.reset([fqdn, {"metadata": {"name": "junk"}, "endpoints": "nonsense", "ports": [{"port": "x"}]}])
    assert view.members() == ()


def test_resource_version() -> None:
    assert resource_version({"metadata": {"resourceVersion": "42"}}) == "42"
    assert resource_version({"metadata": {"resourceVersion": ""}}) is None
    assert resource_version({}) is None

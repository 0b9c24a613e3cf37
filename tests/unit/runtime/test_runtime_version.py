"""The version comes from the installed distribution; build info carries it."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata

import pytest
from prometheus_client import CollectorRegistry

import tether_runtime.version as runtime_version
from tether_runtime.metrics import register_build_info


@pytest.fixture
def fresh_version() -> Iterator[None]:
    runtime_version.version.cache_clear()
    yield
    runtime_version.version.cache_clear()


@pytest.mark.usefixtures("fresh_version")
def test_the_version_is_the_installed_distribution_one() -> None:
    assert runtime_version.version() == metadata.version("tether")


@pytest.mark.usefixtures("fresh_version")
def test_a_source_tree_that_was_never_installed_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(runtime_version.metadata, "version", missing)
    assert runtime_version.version() == runtime_version.UNKNOWN_VERSION == "0+unknown"


def test_build_info_is_one_series_with_the_component_and_the_version() -> None:
    registry = CollectorRegistry()
    register_build_info(registry, "router")
    value = registry.get_sample_value(
        "tether_build_info", {"component": "router", "version": runtime_version.version()}
    )
    assert value == 1.0
    other = CollectorRegistry()
    register_build_info(other, "api_box", build_version="9.9.9")
    assert other.get_sample_value("tether_build_info", {"component": "api_box", "version": "9.9.9"}) == 1.0

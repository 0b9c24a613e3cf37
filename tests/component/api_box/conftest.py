"""Fixtures of the API box's component tests: the app in-process on port 0 with a fake worker pool."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from box_fakes import FakeWorkerPool
from prometheus_client import CollectorRegistry

from api_box.config import Settings
from api_box.io.app import build_app

KEY = "sk-test-alpha"
OTHER_KEY = "sk-test-beta"
AUTH = {"Authorization": f"Bearer {KEY}"}
OTHER_AUTH = {"Authorization": f"Bearer {OTHER_KEY}"}

BoxFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def fake_pool() -> FakeWorkerPool:
    return FakeWorkerPool()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def make_box(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    fake_pool: FakeWorkerPool,
    registry: CollectorRegistry,
    tmp_path: Any,
) -> BoxFactory:
    """Build and start a box; keyword arguments override Settings fields."""

    async def factory(**overrides: Any) -> TestClient[Any, Any]:
        keys = tmp_path / "keys"
        keys.write_text(f"# tenants\nalpha {KEY}\nbeta {OTHER_KEY}\n")
        settings = Settings(
            box_id="box-test", workers=("127.0.0.1:1",), api_keys_file=str(keys), admin_port=-1
        ).replace(**overrides)
        app: web.Application = build_app(settings, registry=registry, worker_pool=fake_pool)  # type: ignore[arg-type]
        return await aiohttp_client(app)

    return factory


@pytest.fixture
async def box(make_box: BoxFactory) -> TestClient[Any, Any]:
    return await make_box()

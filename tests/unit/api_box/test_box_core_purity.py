"""The pure core imports no I/O and reads no clock (import-linter checks the network libraries too)."""

from __future__ import annotations

import ast
from pathlib import Path

import api_box.core

FORBIDDEN = {"asyncio", "time", "socket", "aiohttp", "grpc", "redis", "prometheus_client", "uvloop", "random"}


def test_core_modules_import_nothing_impure() -> None:
    core = Path(api_box.core.__file__).parent
    offenders = []
    for path in sorted(core.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
    assert len(list(core.glob("*.py"))) >= 9

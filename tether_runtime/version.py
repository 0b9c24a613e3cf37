"""The version of the running code: the installed `tether` distribution's (pyproject.toml `version`).

`tether_build_info{component,version}` carries it, so two versions of a component on the dashboards mean
a rollout in progress. Code run from a source tree that was never installed (no `pip install .` or
`pip install -e .`) has no distribution metadata: its version reads `UNKNOWN_VERSION`.
"""

from __future__ import annotations

import functools
from importlib import metadata

__all__ = ["DISTRIBUTION", "UNKNOWN_VERSION", "version"]

DISTRIBUTION = "tether"
# A valid PEP 440 version that sorts below every release and says what happened.
UNKNOWN_VERSION = "0+unknown"


@functools.cache
def version() -> str:
    """The installed distribution's version, or UNKNOWN_VERSION when `tether` is not installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION

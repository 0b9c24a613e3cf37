"""Write the dashboards of deploy/grafana/boards.py to deploy/grafana/dashboards/<name>.json.

Usage, from the repository root::

    python -m deploy.grafana.generate          # rewrite the JSON files
    python -m deploy.grafana.generate --check  # exit 1 if a committed file differs from a fresh generation

The JSON is committed because the Helm chart packages static files (one ConfigMap per dashboard).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deploy.grafana.boards import BOARDS

OUT_DIR = Path(__file__).resolve().parent / "dashboards"


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard, deterministic (stable key order, trailing newline)."""
    return {
        f"{name}.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in BOARDS.items()
    }


def stale_files(out_dir: Path = OUT_DIR) -> list[str]:
    """Names of the files in ``out_dir`` that are missing, different from a fresh render, or left over."""
    fresh = render()
    on_disk = {path.name for path in out_dir.glob("*.json")}
    differing = [
        name
        for name, text in fresh.items()
        if not (out_dir / name).is_file() or (out_dir / name).read_text(encoding="utf-8") != text
    ]
    return sorted(differing + sorted(on_disk - fresh.keys()))


def write(out_dir: Path = OUT_DIR) -> None:
    """Write every dashboard and remove JSON files that no dashboard produces any more."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh = render()
    for path in out_dir.glob("*.json"):
        if path.name not in fresh:
            path.unlink()
    for name, text in fresh.items():
        (out_dir / name).write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    if not args.check:
        write()
        return 0
    stale = stale_files()
    for name in stale:
        print(
            f"stale: deploy/grafana/dashboards/{name} (run: python -m deploy.grafana.generate)",
            file=sys.stderr,
        )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

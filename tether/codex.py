"""Run the Codex CLI (npm `@openai/codex`) against a Tether cluster: its provider config and environment.

`scripts/test` installs the pinned version into `.tools/codex` (git-ignored) when npm is on PATH; the
system test (tests/system/test_codex.py) and the wire-bytes benchmark (benchmarks/codex_bytes.py) use it.
The provider block is the one the README documents:

    model_provider = "tether"
    [model_providers.tether]
    base_url = "http://127.0.0.1:8080/v1"   # the router (or a box)
    env_key = "TETHER_API_KEY"              # the variable holding the API key
    wire_api = "responses"
    supports_websockets = true              # WebSocket mode; false: HTTP POST + SSE
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CODEX_VERSION = "0.171.0"
KEY_VARIABLE = "TETHER_API_KEY"
ROOT = Path(__file__).resolve().parents[1]
CODEX_BIN = ROOT / ".tools" / "codex" / "node_modules" / ".bin" / "codex"
MISSING = (
    f"the Codex CLI is not installed: scripts/test installs @openai/codex@{CODEX_VERSION} into "
    ".tools/codex when npm is on PATH"
)


def config_toml(base_url: str, *, model: str, websockets: bool = True) -> str:
    """A CODEX_HOME config.toml whose default provider is Tether at `base_url` (ending in /v1)."""
    return "\n".join(
        [
            f"model = {json.dumps(model)}",
            'model_provider = "tether"',
            "",
            "[model_providers.tether]",
            'name = "Tether"',
            f"base_url = {json.dumps(base_url)}",
            f'env_key = "{KEY_VARIABLE}"',
            'wire_api = "responses"',
            f"supports_websockets = {'true' if websockets else 'false'}",
            "request_max_retries = 0",  # a failure shows at once instead of after Codex's backoff
            "stream_max_retries = 0",
            "",
        ]
    )


@dataclass(frozen=True, slots=True)
class CodexRun:
    """One finished `codex exec --json`: its exit status, JSONL events and stderr."""

    returncode: int
    events: tuple[Mapping[str, object], ...]
    stderr: str

    @property
    def completed(self) -> bool:
        """The run ended with turn.completed and an agent message."""
        kinds = [event.get("type") for event in self.events]
        items = [event.get("item") for event in self.events]
        messages = [i for i in items if isinstance(i, dict) and i.get("type") == "agent_message"]
        return self.returncode == 0 and "turn.completed" in kinds and bool(messages)


def run_exec(
    prompt: str,
    *,
    base_url: str,
    api_key: str,
    model: str,
    home: Path,
    workdir: Path,
    websockets: bool = True,
    timeout: float = 120.0,
    extra_args: Sequence[str] = (),
) -> CodexRun:
    """Run `codex exec` non-interactively (read-only sandbox, no approvals) in `workdir`, its config and
    state under `home`; raises subprocess.TimeoutExpired when it runs past `timeout` seconds."""
    home.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(config_toml(base_url, model=model, websockets=websockets))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CODEX_HOME": str(home),
        KEY_VARIABLE: api_key,
    }
    argv = [str(CODEX_BIN), "exec", "--json", "--skip-git-repo-check", "--ephemeral", "-s", "read-only"]
    result = subprocess.run(
        [*argv, *extra_args, prompt],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    events = []
    for line in result.stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return CodexRun(result.returncode, tuple(events), result.stderr)

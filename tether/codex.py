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

`SmallContext` adds the settings the README gives for a model with a small context (SmolLM2-135M-Instruct,
8192 tokens): Codex 0.171's first request renders to 9,198 tokens on it as configured by default (its base
instructions, skills and environment blocks, and ~20 KB of tool definitions); with these it is 817 tokens
(45 without the shell tool). Every key is one Codex reads: it reports unknown keys as ignored when it
starts (`CodexRun.ignored_settings`).
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


BRIEF_INSTRUCTIONS = "You are a helpful coding assistant.\n"


@dataclass(frozen=True, slots=True)
class SmallContext:
    """Codex trimmed to a small model's context: its base instructions replaced by a file of a line or two;
    no environment, permissions, apps, collaboration-mode, skills or AGENTS.md blocks; no web search,
    image viewing, goals, sub-agents, plan or user-input tools. The shell tool (exec_command, write_stdin)
    stays unless `shell_tool` is false. `context_window` tells Codex the model's window, and it compacts
    past `auto_compact` of it."""

    instructions_file: Path
    context_window: int = 8192
    auto_compact: float = 0.75
    shell_tool: bool = True

    def root_lines(self) -> list[str]:
        return [
            f"model_instructions_file = {json.dumps(str(self.instructions_file))}",
            f"model_context_window = {self.context_window}",
            f"model_auto_compact_token_limit = {int(self.context_window * self.auto_compact)}",
            'web_search = "disabled"',
            "include_environment_context = false",
            "include_permissions_instructions = false",
            "include_apps_instructions = false",
            "include_collaboration_mode_instructions = false",
            "project_doc_max_bytes = 0",
        ]

    def tables(self) -> list[str]:
        return [
            "[features]",
            f"shell_tool = {'true' if self.shell_tool else 'false'}",
            "view_image = false",
            "goals = false",
            "",
            "[agents]",
            "enabled = false",
            "",
            "[skills]",
            "include_instructions = false",
            "",
            "[tools.experimental_request_user_input]",
            "enabled = false",
            "",
            "[tools.update_plan]",
            "enabled = false",
            "",
        ]


def config_toml(
    base_url: str, *, model: str, websockets: bool = True, small_context: SmallContext | None = None
) -> str:
    """A CODEX_HOME config.toml whose default provider is Tether at `base_url` (ending in /v1); TOML wants
    the root keys before the first table."""
    small = small_context
    return "\n".join(
        [
            f"model = {json.dumps(model)}",
            'model_provider = "tether"',
            *(small.root_lines() if small else []),
            "",
            *(small.tables() if small else []),
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
    def ignored_settings(self) -> list[str]:
        """Codex's warnings about config keys it does not know (it ignores them)."""
        found = []
        for event in self.events:
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "error":
                message = str(item.get("message", ""))
                if "unrecognized configuration" in message or "is deprecated" in message:
                    found.append(message)
        return found

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
    small_context_window: int | None = None,
) -> CodexRun:
    """Run `codex exec` non-interactively (read-only sandbox, no approvals) in `workdir`, its config and
    state under `home`; with `small_context_window`, trimmed to it (SmallContext, its instructions file
    BRIEF_INSTRUCTIONS in `home`). Raises subprocess.TimeoutExpired past `timeout` seconds."""
    home.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    small = None
    if small_context_window is not None:
        small = SmallContext(home / "instructions.md", context_window=small_context_window)
        small.instructions_file.write_text(BRIEF_INSTRUCTIONS)
    config = config_toml(base_url, model=model, websockets=websockets, small_context=small)
    (home / "config.toml").write_text(config)
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

"""The demo agent's pure parts: its tools, their faked outputs, and the byte accounting.

The demo sends each turn over WebSocket mode as a delta (the new function_call_output items, chained by
previous_response_id). `FullContextLedger` keeps what a stateless HTTP client would have had to send
instead: every turn, the whole history (user message, every function call, every tool output) plus the
same instructions and tools. Both sides are measured as the JSON text the openai SDK sends
(`json.dumps` of the body), so the comparison is like for like.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

INSTRUCTIONS = (
    "You are a coding agent working in a Python repository. Use the tools to inspect the code and run "
    "the tests, then answer with a short summary of the fix."
)
USER_MESSAGE = (
    "tests/test_config.py::test_parse_timeout fails after the last refactor. Find the cause and tell me "
    "how to fix it."
)
_STRING = {"type": "string"}
TOOLS: tuple[dict[str, Any], ...] = (
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file of the repository.",
        "parameters": {"type": "object", "properties": {"path": _STRING}, "required": ["path"]},
    },
    {
        "type": "function",
        "name": "grep",
        "description": "Search the repository for a regular expression.",
        "parameters": {
            "type": "object",
            "properties": {"pattern": _STRING, "path": _STRING},
            "required": ["pattern"],
        },
    },
    {
        "type": "function",
        "name": "run_tests",
        "description": "Run pytest on a test file or node id and return its output.",
        "parameters": {"type": "object", "properties": {"target": _STRING}, "required": ["target"]},
    },
)
OUTPUT_BYTES = {"read_file": 3000, "grep": 2000, "run_tests": 4000}  # about what real tools return


def request_bytes(body: Mapping[str, Any]) -> int:
    """Bytes of a request body as the openai SDK serializes it (`json.dumps`, ASCII-escaped)."""
    return len(json.dumps(body).encode())


def user_message(text: str = USER_MESSAGE) -> dict[str, Any]:
    """An input message item from the user."""
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def function_call_output(call_id: str, output: str) -> dict[str, Any]:
    """The input item that returns a tool's output to the model."""
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def fake_tool_output(name: str, arguments: str) -> str:
    """A deterministic, plausible output of a few KB for a tool call (no file is read, nothing runs)."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        parsed = None
    args: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    subject = str(next(iter(args.values()), "src/app/config.py"))[:80]
    size = OUTPUT_BYTES.get(name)
    if size is None:
        return f"error: unknown tool {name!r}"
    seed = hashlib.blake2b(f"{name}\0{arguments}".encode(), digest_size=8).hexdigest()
    headers = {"read_file": "# ", "grep": "$ grep -rn ", "run_tests": "$ pytest "}
    lines = [headers[name] + subject]
    number = 0
    while sum(len(line) + 1 for line in lines) < size:
        number += 1
        lines.append(_fake_line(name, subject, number, seed))
    return "\n".join(lines)[:size]


def _fake_line(name: str, subject: str, number: int, seed: str) -> str:
    if name == "read_file":
        key = f"timeout_{seed[number % 16]}"
        return f"    value_{number} = settings.get({key!r}, {number * 7})  # line {number}"
    if name == "grep":
        return f"src/app/module_{number % 9}.py:{number * 13}: {subject} = parse_timeout(raw_{number})"
    return f"tests/test_config.py::test_case_{number} PASSED [{min(99, number)}%]"


@dataclass
class FullContextLedger:
    """What an HTTP client without server-side state would send each turn: the whole history."""

    model: str
    instructions: str
    tools: Sequence[Mapping[str, Any]]
    metadata: Mapping[str, str]
    history: list[dict[str, Any]] = field(default_factory=list)
    total_bytes: int = 0

    def turn(self, new_input: Sequence[dict[str, Any]]) -> int:
        """Account one turn that adds `new_input` to the history; the full-context body's bytes."""
        self.history.extend(new_input)
        body = {
            "model": self.model,
            "instructions": self.instructions,
            "tools": list(self.tools),
            "input": self.history,
            "metadata": dict(self.metadata),
            "store": False,
        }
        size = request_bytes(body)
        self.total_bytes += size
        return size

    def record_output(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Add the model's function calls to the history, as a full-context client would echo them."""
        for item in items:
            if item.get("type") == "function_call":
                self.history.append(
                    {
                        "type": "function_call",
                        "call_id": item.get("call_id"),
                        "name": item.get("name"),
                        "arguments": item.get("arguments"),
                    }
                )
            elif item.get("type") == "message":
                self.history.append({"role": "assistant", "content": message_text(item)})


def message_text(item: Mapping[str, Any]) -> str:
    """The text of an output message item."""
    parts = item.get("content") or []
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, Mapping))


def describe_call(name: str, arguments: str, limit: int = 60) -> str:
    """`read_file({"path": "src/x.py"})`, shortened to about `limit` characters of arguments."""
    shown = arguments if len(arguments) <= limit else arguments[: limit - 1] + "…"
    return f"{name}({shown})"

"""Representative agent traffic for measuring the tokenizer's bytes per token (test_tokenizer.py and
benchmarks/worker_bench.py print the same figures).

Categories, from real material where possible:
- prose: an agent's instructions and user messages, plus this repository's README and design notes;
- code: Python source of this repository (what a coding agent reads and writes);
- tool_json: the JSON a coding agent exchanges with its tools: tool schemas, call arguments, and
  search results over this repository (path, line, text), as json.dumps writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

INSTRUCTIONS = """You are a careful software engineering agent working in a Python repository. Read the
relevant files before you change anything, keep every change small and explain why it is needed. When a
test fails, find the cause instead of weakening the test. Use the tools you are given: search the code
with grep, open files with read_file, and run the test suite with run_tests. Answer in plain English and
quote file paths and line numbers when you refer to code. If the request is ambiguous, state the
assumption you make and go on."""

USER_MESSAGES = [
    "The worker drops connections when a client sends a very large prompt. Can you find where the size "
    "limit is enforced and make the error message say which field was too large?",
    "Please add a test for the eviction order of the chain cache, then run the unit tests and tell me "
    "whether anything else broke.",
    "Why does the benchmark report fewer cached tokens on the first turn than on the others?",
]

TOOLS = [
    {
        "name": "grep",
        "description": "Search files for a regular expression and return matching lines.",
        "parameters": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "Regular expression to search for."},
                "path": {"type": "string", "description": "Directory or file to search."},
                "max_results": {"type": "integer", "minimum": 1, "maximum": 200},
            },
            "required": ["pattern"],
        },
    },
    {
        "name": "read_file",
        "description": "Read a file and return its text with line numbers.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "start_line": {"type": "integer"},
                "end_line": {"type": "integer"},
            },
            "required": ["path"],
        },
    },
    {
        "name": "run_tests",
        "description": "Run pytest on the given paths and return the summary.",
        "parameters": {
            "type": "object",
            "properties": {
                "paths": {"type": "array", "items": {"type": "string"}},
                "verbose": {"type": "boolean"},
            },
        },
    },
]

PROSE_FILES = ("README.md", "docs/metrics.md")
CODE_FILES = ("gpu_worker/wire/chain.py", "gpu_worker/wire/chat.py", "gpu_worker/core/cache.py")


def read(relative: str) -> str:
    path = ROOT / relative
    return path.read_text(encoding="utf-8") if path.exists() else ""


def _search_results() -> str:
    hits = []
    for relative in CODE_FILES:
        for number, line in enumerate(read(relative).splitlines(), start=1):
            if "def " in line or "class " in line:
                hits.append({"path": relative, "line": number, "text": line.strip()})
    return json.dumps({"matches": hits, "truncated": False})


def samples() -> dict[str, str]:
    """Category -> text."""
    prose = "\n\n".join([INSTRUCTIONS, *USER_MESSAGES, *(read(p) for p in PROSE_FILES)])
    code = "\n\n".join(read(p) for p in CODE_FILES)
    calls = [
        {"pattern": "max_prompt_tokens", "path": "gpu_worker/core"},
        {"path": "gpu_worker/core/validation.py", "start_line": 80, "end_line": 120},
        {"paths": ["tests/unit/gpu_worker"], "verbose": False},
    ]
    tool_json = "\n".join([json.dumps(TOOLS), *(json.dumps(c) for c in calls), _search_results()])
    return {"prose": prose, "code": code, "tool_json": tool_json}

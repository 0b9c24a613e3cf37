"""Representative agent traffic for measuring the tokenizer's bytes per token (test_tokenizer.py and
benchmarks/worker_bench.py print the same figures), and the header of the benchmark's agent run.

Categories (fixed text here, or files of the wire contract, which change only with the protocol, so the
figures stay comparable from one commit to the next):
- prose: a coding agent's instructions, an AGENTS.md-style project guide, user messages and answers;
- code: the Python source of gpu_worker/wire (what a coding agent reads and writes);
- tool_json: the JSON a coding agent exchanges with its tools: tool schemas, call arguments, and
  search results over that source (path, line, text), as json.dumps writes them.
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

PROJECT_GUIDE = """# Working in this repository

## Layout
The service is split into small packages. Each one has a `core/` folder with pure, synchronous code that
takes its inputs (and the current time) as arguments and returns results, and a thin shell that does the
input and output: sockets, timers, files and metrics. Put new logic in the core whenever you can, because
the core is where the tests are fast and exact. The shells should read like wiring: receive, call the
core, act on what it returned.

## Before you change code
1. Read the module docstring of every file you touch. It states the invariants the code relies on.
2. Search for the callers of a function before you change its signature. Other teams import the client
   package and the wire contract, so a change there needs a note in the pull request.
3. Run the unit tests of the package first; they take seconds. Run the component tests before you ask
   for a review; they start servers on free ports and take about a minute.

## Style
- Names say what a thing is, comments say why it is done this way. Do not restate the code in comments.
- Functions stay short. When one grows past forty lines, look for the second job it is doing.
- Every queue, buffer and cache has a bound, and going over the bound is a clear error for the caller,
  never a silent drop and never a crash of the process.
- Every network call has a timeout. Every background task has an owner that cancels it on shutdown.
- Errors belong to one exception tree per service. Exactly one function maps them to status codes.

## Tests
Write the test first when you fix a bug: it must fail before the fix and pass after it. Tests never sleep
to wait for something; they wait on the event that says it happened. A test that depends on timing asks
for a generous bound, because the machines that run the suite are shared. Do not mark a failing test as
skipped to get a green build; find out why it fails.

## Performance
Measure before and after. Benchmarks are scripts that print numbers; they do not assert them. When you
report a number, give the command that produced it and the machine it ran on.
"""

ANSWERS = [
    "The size limit is enforced in the validation core, before the worker spends anything on the request. "
    "I changed the message so that it names the field and both numbers: the prompt had 140000 tokens and "
    "the limit is 131072. The unit test for oversized prompts now checks the new wording, and the "
    "component test confirms that the client receives INVALID_ARGUMENT with that message.",
    "I added a test that fills the cache past its budget with three chains, touches the oldest one and "
    "then commits a fourth: the second chain is the one evicted, and the total stays within the budget. "
    "All 172 unit tests pass; nothing else changed.",
]

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

CODE_FILES = ("gpu_worker/wire/chain.py", "gpu_worker/wire/chat.py", "gpu_worker/wire/tokenizer.py")


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
    prose = "\n\n".join([INSTRUCTIONS, PROJECT_GUIDE, *USER_MESSAGES, *ANSWERS])
    code = "\n\n".join(read(p) for p in CODE_FILES)
    calls = [
        {"pattern": "max_prompt_tokens", "path": "gpu_worker/core"},
        {"path": "gpu_worker/core/validation.py", "start_line": 80, "end_line": 120},
        {"paths": ["tests/unit/gpu_worker"], "verbose": False},
    ]
    tool_json = "\n".join([json.dumps(TOOLS), *(json.dumps(c) for c in calls), _search_results()])
    return {"prose": prose, "code": code, "tool_json": tool_json}

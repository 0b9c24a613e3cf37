"""Smoke test run by `helm test`: one agent run through the router Service with the official openai SDK.

WebSocket mode: one socket, a `response.create` per turn with only the new input (`previous_response_id`
chains the turns), tool outputs answered locally, until a turn answers with a message instead of a function
call. Exits 0 when that final answer arrives, 1 on a failed turn or no answer; prints each turn.
Configuration comes from the environment (set by the chart): TETHER_SMOKE_BASE_URL
(http://<router>:<port>/v1), TETHER_SMOKE_API_KEY, TETHER_SMOKE_SESSION_HEADER, TETHER_SMOKE_MAX_TURNS,
TETHER_SMOKE_TIMEOUT_S.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

from openai import OpenAI

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file of the repository under review.",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
        },
    }
]
INSTRUCTIONS = "You are a code reviewer. Use read_file to inspect files, then summarise in one sentence."
TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}


def tool_output(call: dict[str, Any]) -> dict[str, Any]:
    """Answers one function call with a fixed, deterministic file body."""
    return {
        "type": "function_call_output",
        "call_id": call["call_id"],
        "output": "def add(a, b):\n    return a + b\n" * 8,
    }


def run_turn(conn: Any, deadline: float, **create: Any) -> dict[str, Any]:
    """Sends one response.create and returns the terminal event as a dict."""
    conn.response.create(**create)
    while time.monotonic() < deadline:
        event = json.loads(conn.recv_bytes())
        if event.get("type") in TERMINAL:
            return dict(event)
    raise TimeoutError("no terminal event before the deadline")


def main() -> int:
    """Drives one agent run; returns the process exit status."""
    base_url = os.environ["TETHER_SMOKE_BASE_URL"]
    max_turns = int(os.environ.get("TETHER_SMOKE_MAX_TURNS", "8"))
    deadline = time.monotonic() + float(os.environ.get("TETHER_SMOKE_TIMEOUT_S", "90"))
    client = OpenAI(base_url=base_url, api_key=os.environ["TETHER_SMOKE_API_KEY"], max_retries=2)
    header = os.environ.get("TETHER_SMOKE_SESSION_HEADER", "X-Session-Id")
    session = f"smoke-{uuid.uuid4().hex[:12]}"
    print(f"smoke: {base_url} session={session}", flush=True)
    # No silent reconnects: a smoke test must see a dropped socket (store:false state is connection-local).
    with client.responses.connect(extra_headers={header: session}, max_retries=0) as conn:
        create: dict[str, Any] = {
            "model": "tether-sim",
            "instructions": INSTRUCTIONS,
            "tools": TOOLS,
            "store": False,
            "input": [{"role": "user", "content": "Review src/math.py."}],
        }
        for turn in range(1, max_turns + 1):
            event = run_turn(conn, deadline, **create)
            if event["type"] != "response.completed":
                print(f"smoke: turn {turn} ended with {json.dumps(event)[:500]}", flush=True)
                return 1
            response = event["response"]
            calls = [item for item in response.get("output", []) if item.get("type") == "function_call"]
            print(f"smoke: turn {turn} {response['id']} completed, {len(calls)} tool call(s)", flush=True)
            if not calls:
                answered = any(item.get("type") == "message" for item in response.get("output", []))
                print(
                    f"smoke: agent run {'completed' if answered else 'ended without an answer'} "
                    f"in {turn} turn(s)",
                    flush=True,
                )
                return 0 if answered else 1
            create = {
                "model": "tether-sim",
                "tools": TOOLS,
                "store": False,
                "previous_response_id": response["id"],
                "input": [tool_output(call) for call in calls],
            }
    print(f"smoke: no final answer after {max_turns} turns", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())

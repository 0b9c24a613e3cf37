"""A short real agent run through the official openai SDK in WebSocket mode (`tether up --demo`).

    client = OpenAI(base_url=..., api_key=...)
    with client.responses.connect(extra_headers={"X-Session-Id": ...}) as conn:
        conn.response.create(model=..., input=[user message], tools=[...], store=False)
        ... read events until response.completed, run the tool calls, send only their outputs with
        previous_response_id, until the model answers.

Prints per turn what the model did, the time to first token, and the bytes sent; at the end the total
against what an HTTP client sending the full context every turn would have sent (tether/core/agent_run.py).
Run it against any Tether: `python -m tether.demo --base-url http://127.0.0.1:8080/v1`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import openai
from openai import OpenAI

from tether.config import DEV_API_KEY
from tether.core.agent_run import (
    INSTRUCTIONS,
    TOOLS,
    FullContextLedger,
    describe_call,
    fake_tool_output,
    function_call_output,
    message_text,
    request_bytes,
    user_message,
)
from tether.errors import DemoFailed, exit_status

DEFAULT_TOOL_CALLS = 6
SESSION_HEADER = "X-Session-Id"
FIRST_OUTPUT_EVENTS = ("response.output_text.delta", "response.function_call_arguments.delta")
FAILED_EVENTS = ("response.failed", "response.incomplete")
HTTP_TIMEOUT = 30.0


@dataclass(frozen=True)
class RunReport:
    """What one agent run did and sent."""

    turns: int
    tool_calls: int
    sent_bytes: int
    full_context_bytes: int
    answer: str
    seconds: float


def run_agent(
    base_url: str,
    api_key: str,
    *,
    tool_calls: int = DEFAULT_TOOL_CALLS,
    session_id: str | None = None,
    model: str | None = None,
    write: Callable[[str], None] = print,
) -> RunReport:
    """Drive one agent run to its final answer; DemoFailed on an error event or a failed response."""
    client = OpenAI(base_url=base_url, api_key=api_key, timeout=HTTP_TIMEOUT, max_retries=2)
    run = _AgentRun(model or _first_model(client), tool_calls, write)
    session = session_id or f"demo-{uuid.uuid4().hex[:12]}"
    write(f"demo: agent run with model {run.model!r}, {len(TOOLS)} tools, session {session}")
    # store=false: the box keeps the last response of this connection only, so one socket for the run.
    with client.responses.connect(extra_headers={SESSION_HEADER: session}, max_retries=0) as conn:
        for turn in range(1, tool_calls + 3):
            report = run.turn(conn, turn)
            if report is not None:
                write(_summary(report))
                return report
    raise DemoFailed(f"no final answer after {tool_calls + 2} turns")


class _AgentRun:
    """The state of one run between turns: what to send next and what was sent so far."""

    def __init__(self, model: str, tool_calls: int, write: Callable[[str], None]) -> None:
        self.model = model
        # Sim-engine knobs (gpu_worker/core/agent.py): calls before the answer, short tool arguments.
        self.metadata = {"tether.tool_calls": str(tool_calls), "tether.argument_bytes": "2"}
        self.ledger = FullContextLedger(model, INSTRUCTIONS, TOOLS, self.metadata)
        self.write = write
        self.started = time.perf_counter()
        self.sent_total = 0
        self.calls = 0
        self.previous: str | None = None
        self.new_input: list[dict[str, Any]] = [user_message()]

    def turn(self, conn: Any, turn: int) -> RunReport | None:
        """Send one response.create, read it to completion, run its tool calls; a report once answered."""
        body: dict[str, Any] = {"model": self.model, "instructions": INSTRUCTIONS, "tools": list(TOOLS)}
        body.update(input=self.new_input, store=False, metadata=self.metadata)
        if self.previous is not None:
            body["previous_response_id"] = self.previous
        sent = request_bytes({"type": "response.create", **body})
        self.sent_total += sent
        self.ledger.turn(self.new_input)
        sent_at = time.perf_counter()
        conn.response.create(**body)
        response, ttft = _read_turn(conn, sent_at)
        output = [item.model_dump() for item in response.output]
        self.ledger.record_output(output)
        calls = [item for item in output if item.get("type") == "function_call"]
        figures = f"ttft {_ms(ttft)}  sent {sent:,} B  total {self.sent_total:,} B"
        if not calls:
            answer = " ".join(message_text(i) for i in output if i.get("type") == "message").strip()
            self.write(f"turn {turn:>2}  answer {_shorten(answer)!r}  {figures}")
            seconds = time.perf_counter() - self.started
            return RunReport(turn, self.calls, self.sent_total, self.ledger.total_bytes, answer, seconds)
        for call in calls:
            self.write(f"turn {turn:>2}  call {describe_call(call['name'], call['arguments'])}  {figures}")
        self.calls += len(calls)
        self.previous = response.id
        self.new_input = [
            function_call_output(c["call_id"], fake_tool_output(c["name"], c["arguments"])) for c in calls
        ]
        return None


def _read_turn(conn: Any, sent_at: float) -> tuple[Any, float | None]:
    ttft: float | None = None
    for event in conn:
        if ttft is None and event.type in FIRST_OUTPUT_EVENTS:
            ttft = time.perf_counter() - sent_at
        if event.type == "response.completed":
            return event.response, ttft
        if event.type in FAILED_EVENTS:
            raise DemoFailed(f"{event.type}: {event.response.error or event.response.incomplete_details}")
        if event.type == "error":
            error = event.error
            code, message = getattr(error, "code", None), getattr(error, "message", error)
            raise DemoFailed(f"error event: {code}: {message}")
    raise DemoFailed("the connection closed before the turn completed")


def _first_model(client: OpenAI) -> str:
    models = client.models.list().data
    if not models:
        raise DemoFailed("GET /v1/models lists no model")
    return models[0].id


def _summary(report: RunReport) -> str:
    ratio = report.full_context_bytes / report.sent_bytes if report.sent_bytes else 0.0
    return (
        f"demo: {_count(report.tool_calls, 'tool call')}, {_count(report.turns, 'turn')} "
        f"in {report.seconds:.2f} s; "
        f"sent {report.sent_bytes:,} B in WebSocket mode, an HTTP client resending the full context "
        f"would have sent {report.full_context_bytes:,} B ({ratio:.1f}x)"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _shorten(text: str, limit: int = 72) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tether.demo`: run the agent against a running Tether; 0 on a final answer."""
    parser = argparse.ArgumentParser(prog="python -m tether.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the cluster's base URL, ending in /v1")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", DEV_API_KEY))
    parser.add_argument("--tool-calls", type=int, default=DEFAULT_TOOL_CALLS, help="calls before the answer")
    parser.add_argument("--session-id", default=None, help="X-Session-Id header (default: random)")
    parser.add_argument("--model", default=None, help="default: the first model GET /v1/models lists")
    args = parser.parse_args(argv)
    if not 0 <= args.tool_calls <= 64:
        parser.error("--tool-calls must be in 0..64")
    try:
        run_agent(
            args.base_url,
            args.api_key,
            tool_calls=args.tool_calls,
            session_id=args.session_id,
            model=args.model,
            write=lambda line: print(line, flush=True),
        )
    except (DemoFailed, openai.OpenAIError, OSError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr, flush=True)
        return exit_status(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())

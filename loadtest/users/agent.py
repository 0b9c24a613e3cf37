"""The Locust agent users: one agent run per task, in one of the three modes (loadtest/workload.py).

Locust runs on gevent, so these users do blocking I/O that gevent makes cooperative: websocket-client for
WebSocket mode, a requests.Session (keep-alive) for HTTP. Never asyncio here. Each turn fires one
`events.request` (request_type WS or HTTP, name "<mode> turn", the turn time, the bytes received) and, when
the model produced output, one more for the time to first token (request_type TTFT, name "<mode>"); never
one per token. A failed turn is reported as a failed request and ends the run; the next task starts a new
one. Tool outputs are real text from the Python standard library (loadtest/corpus.py). The knobs come
from the parser arguments in loadtest/listeners.py (with TETHER_LOAD_* variables).
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, ClassVar
from urllib.parse import urlencode

import gevent
import orjson
import requests
import websocket
from locust import User, constant, tag, task

from loadtest.corpus import Corpus
from loadtest.workload import (
    AgentRun,
    AgentShape,
    Mode,
    SseParser,
    TurnError,
    TurnEvents,
    WorkloadError,
    api_key,
    dumps,
)

SESSION_HEADER = "X-Session-Id"
_CORPUS: list[Corpus] = []  # one per process, shared by its users (gevent: one thread)


def _corpus() -> Corpus:
    """The tool outputs' real text (loadtest/corpus.py), listed once per process."""
    if not _CORPUS:
        _CORPUS.append(Corpus.stdlib())
    return _CORPUS[0]


class AgentUser(User):
    """Shared run loop; subclasses open a channel per run and exchange one turn."""

    abstract = True
    wait_time = constant(0)
    mode: ClassVar[Mode]
    request_type: ClassVar[str]

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.shape = AgentShape(
            tool_calls=opts.tool_calls,
            output_bytes=opts.tool_output_bytes,
            history_tokens=opts.history_tokens,
            model=opts.model,
        )
        self.api_key: str = api_key(opts.api_key, os.environ)
        self.session_key: str = opts.session_key
        self.think_time: float = opts.think_time
        self.timeout: float = opts.turn_timeout
        host = (self.host or "http://127.0.0.1:8080").rstrip("/")
        self.base_url = host if host.endswith("/v1") else host + "/v1"

    def session_headers(self, session_id: str) -> dict[str, str]:
        """The routing key as a header, when that is the session-key mode."""
        return {SESSION_HEADER: session_id} if self.session_key == "header" else {}

    def session_query(self, session_id: str) -> str:
        """The routing key as a query string, when that is the session-key mode."""
        return "?" + urlencode({"session_id": session_id}) if self.session_key == "query" else ""

    def run_agent(self) -> None:
        """One agent run: turns until the final answer, or until a turn fails."""
        run = AgentRun(self.mode, self.shape, f"locust-{uuid.uuid4().hex[:16]}", texts=_corpus())
        try:
            self.open_run(run.run_id)
            while not run.finished:
                self._turn(run)
                if self.think_time and not run.finished:
                    gevent.sleep(self.think_time)
        except TurnError:
            pass  # already reported as a failed request
        finally:
            self.close_run()

    def _turn(self, run: AgentRun) -> None:
        body = run.next_body()
        started = time.perf_counter()
        name = f"{self.mode} turn"
        try:
            response, ttft, received = self.exchange(body, started)
            run.record(response)
        except (
            TurnError,
            WorkloadError,
            OSError,
            requests.RequestException,
            websocket.WebSocketException,
        ) as exc:
            self._fire(name, started, 0, exc)
            raise TurnError(str(exc)) from exc
        self._fire(name, started, received, None)
        if ttft is not None:
            self.environment.events.request.fire(
                request_type="TTFT",
                name=self.mode,
                response_time=ttft * 1000,
                response_length=0,
                exception=None,
                context={},
            )

    def _fire(self, name: str, started: float, received: int, exc: BaseException | None) -> None:
        self.environment.events.request.fire(
            request_type=self.request_type,
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=received,
            exception=exc,
            context={},
        )

    def open_run(self, session_id: str) -> None:
        """Prepare the channel of one run."""

    def close_run(self) -> None:
        """Release the channel of one run."""

    def exchange(self, body: dict[str, Any], started: float) -> tuple[dict[str, Any], float | None, int]:
        """Send one turn; (terminal response, seconds to first output delta or None, bytes received)."""
        raise NotImplementedError


class WebSocketAgent(AgentUser):
    """WebSocket mode, store:false, only the new items each turn, one connection per run."""

    mode = "ws"
    request_type = "WS"
    ws: websocket.WebSocket | None = None

    def open_run(self, session_id: str) -> None:
        url = self.base_url.replace("http", "ws", 1) + "/responses" + self.session_query(session_id)
        headers = [f"Authorization: Bearer {self.api_key}"]
        headers += [f"{k}: {v}" for k, v in self.session_headers(session_id).items()]
        self.ws = websocket.create_connection(
            url, header=headers, timeout=self.timeout, enable_multithread=False
        )

    def close_run(self) -> None:
        # Not ws.close(): it waits for the server's close frame under a bare `except:` that would
        # swallow the GreenletExit Locust stops users with, and the user would never stop.
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.send_close()
            except (OSError, websocket.WebSocketException):
                pass  # the socket is already gone
            finally:
                ws.shutdown()  # type: ignore[no-untyped-call]

    def exchange(self, body: dict[str, Any], started: float) -> tuple[dict[str, Any], float | None, int]:
        if self.ws is None:
            raise TurnError("no open websocket")
        self.ws.send(dumps(body).decode())
        received, turn = 0, TurnEvents(started)
        while True:
            opcode, data = self.ws.recv_data()
            if opcode != websocket.ABNF.OPCODE_TEXT:
                raise TurnError(f"websocket frame with opcode {opcode} before the turn completed")
            received += len(data)
            event = orjson.loads(data)
            if turn.see(str(event.get("type")), time.perf_counter(), event=event):
                return turn.response(), turn.ttft, received

    @tag("ws", "websocket")
    @task
    def agent_run(self) -> None:
        """One agent run over WebSocket mode."""
        self.run_agent()


class _HttpAgent(AgentUser):
    """POST /v1/responses with stream:true on a keep-alive session."""

    abstract = True
    request_type = "HTTP"

    def on_start(self) -> None:
        super().on_start()
        self.http = requests.Session()
        self.session_id = ""

    def on_stop(self) -> None:
        self.http.close()

    def open_run(self, session_id: str) -> None:
        self.session_id = session_id

    def exchange(self, body: dict[str, Any], started: float) -> tuple[dict[str, Any], float | None, int]:
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        headers.update(self.session_headers(self.session_id))
        url = self.base_url + "/responses" + self.session_query(self.session_id)
        with self.http.post(
            url, data=dumps(body), headers=headers, stream=True, timeout=self.timeout
        ) as resp:
            if resp.status_code != 200:
                raise TurnError(f"HTTP {resp.status_code}: {resp.text[:200]}")
            parser, turn, received = SseParser(), TurnEvents(started), 0
            for chunk in resp.iter_content(chunk_size=None):
                received += len(chunk)
                for kind, data in parser.feed(chunk):
                    turn.see(kind, time.perf_counter(), data)
        return turn.response(), turn.ttft, received


class HttpFullContextAgent(_HttpAgent):
    """HTTP, store:false, the whole history every turn (the stateless baseline)."""

    mode = "http_full"

    @tag("http", "full")
    @task
    def agent_run(self) -> None:
        """One agent run resending the full context each turn."""
        self.run_agent()


class HttpChainedAgent(_HttpAgent):
    """HTTP, store:true, previous_response_id and only the new items each turn."""

    mode = "http_chained"

    @tag("http", "chained")
    @task
    def agent_run(self) -> None:
        """One agent run chained with previous_response_id."""
        self.run_agent()

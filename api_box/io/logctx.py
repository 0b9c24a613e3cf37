"""Per-request log context: every log record carries the request id and the response id it belongs to.

The ids live in context variables, set by the HTTP middleware (request id, echoed as `X-Request-Id`) and by
the turn runner (response id), so a WebSocket connection's lines carry its upgrade request's id and each
turn's lines its response's id. API keys and session keys are never put here.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

REQUEST_ID: ContextVar[str | None] = ContextVar("tether_request_id", default=None)
RESPONSE_ID: ContextVar[str | None] = ContextVar("tether_response_id", default=None)

# A client-chosen X-Request-Id is kept only when it is short and plain, so it cannot forge log lines.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_from(header: str | None) -> str:
    """The client's X-Request-Id when it is safe to log, else a fresh one."""
    if header is not None and _SAFE_ID.fullmatch(header):
        return header
    return f"req_{uuid.uuid4().hex}"


class ContextFilter(logging.Filter):
    """Copies the context ids onto every record (attach it to the handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.response_id = RESPONSE_ID.get()
        return True


_PROBE_PATHS = frozenset({"/livez", "/readyz", "/metrics"})


class QuietProbesAccessLogger(AccessLogger):
    """aiohttp's access line, except for health probes and metric scrapes: the kubelet and Prometheus send
    them every few seconds, so they are logged only when the access logger is at DEBUG."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.path in _PROBE_PATHS and not self.logger.isEnabledFor(logging.DEBUG):
            return
        super().log(request, response, time)

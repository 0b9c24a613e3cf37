"""What the handlers of one app share (typed app and request keys)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from api_box.config import Settings
from api_box.core.auth import KeyRing
from api_box.io.metrics import BoxMetrics
from api_box.io.resume import Resumes
from api_box.io.sealed import SealedHandoffs
from api_box.io.tasks import TaskSet
from api_box.io.turns import TurnRunner

if TYPE_CHECKING:
    from api_box.io.ws import WsConnection


@dataclass(slots=True)
class BoxState:
    """The box's shared state: one per app."""

    settings: Settings
    runner: TurnRunner
    keyring: KeyRing
    metrics: BoxMetrics
    tasks: TaskSet
    handoffs: SealedHandoffs
    resumes: Resumes
    connections: set[WsConnection] = field(default_factory=set)
    ready: bool = False
    draining: bool = False


STATE = web.AppKey("tether_box_state", BoxState)
TENANT = web.RequestKey("tether_tenant", str)
REQUEST_ID_KEY = web.RequestKey("tether_request_id", str)

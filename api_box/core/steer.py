"""`response.steer` over WebSocket: parsing the event and building its answers. Pure.

The event and its answers have the shapes of the openai SDK (3.63) types
`openai.types.responses.ResponseSteerEvent`, `ResponseSteerAcceptedEvent`, `ResponseSteerPendingEvent`
and `ResponseSteerFailedEvent`:

    client: {"type": "response.steer", "previous_response_id": "resp_...", "input": "..." | [messages]}
    server: {"type": "response.steer.accepted", "sequence_number": N,
             "steer": {"id": "steer_...", "previous_response_id": "resp_..."}}
            {"type": "response.steer.pending", "sequence_number": N, "reason": "waiting_for_required_input",
             "required_input": [{"type": "function_call_output", "call_id", "name"} |
                                {"type": "custom_tool_call_output", "call_id"}],
             "steer": {"id", "previous_response_id"}}
            {"type": "response.steer.failed", "sequence_number": N,
             "error": {"type": "invalid_request_error", "code": CODE, "message": "..."},
             "steer": {"input": <as sent>, "previous_response_id": "...", "id": "steer_..." (once accepted)}}

(`stream_id` is added by the shell when the target response runs on a named lane.) The event accepts only
`type`, `previous_response_id` and `input`; `input` is a string or a non-empty array of user messages, each
with only `type` ("message", optional), `role` ("user") and `content` (a string, or input_text and
input_image parts: what a create accepts; an image reaches the model as the create's placeholder).
Anything else is `invalid_input`. What the state machine does with a steer is in api_box/core/session.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from api_box.core.errors import RequestError
from api_box.core.protocol import Limits, MessageItem, message_content

STEER_EVENT: Final = "response.steer"
_KEYS: Final = frozenset({"type", "previous_response_id", "input"})
_MESSAGE_KEYS: Final = frozenset({"type", "role", "content"})

# The documented codes of response.steer.failed.
RESPONSE_NOT_FOUND: Final = "response_not_found"
INVALID_INPUT: Final = "invalid_input"
STEERING_NOT_SUPPORTED: Final = "steering_not_supported"
TOO_MANY_PENDING_STEERS: Final = "too_many_pending_steers"
RESPONSE_ALREADY_COMPLETED: Final = "response_already_completed"
RESPONSE_NOT_ACTIVE: Final = "response_not_active"
SUCCESSOR_CREATION_FAILED: Final = "successor_creation_failed"
STEER_CODES: Final = (
    RESPONSE_NOT_FOUND,
    INVALID_INPUT,
    STEERING_NOT_SUPPORTED,
    TOO_MANY_PENDING_STEERS,
    RESPONSE_ALREADY_COMPLETED,
    RESPONSE_NOT_ACTIVE,
    SUCCESSOR_CREATION_FAILED,
)


@dataclass(frozen=True, slots=True)
class SteerRequest:
    """A valid response.steer: the response to steer, the messages to add, and the input as sent."""

    previous_response_id: str
    items: tuple[MessageItem, ...]
    raw_input: Any  # echoed in response.steer.failed
    size: int = 0  # bytes of the frame


@dataclass(frozen=True, slots=True)
class InvalidSteer:
    """A response.steer that failed validation (answered with invalid_input, no id allocated)."""

    message: str
    previous_response_id: str
    raw_input: Any


@dataclass(frozen=True, slots=True)
class Steer:
    """An accepted steering submission: its id and what it adds."""

    steer_id: str
    request: SteerRequest

    @property
    def previous_response_id(self) -> str:
        """The response it steers."""
        return self.request.previous_response_id


@dataclass(frozen=True, slots=True)
class RequiredInput:
    """An output a response left waiting for: a call of a function or a custom tool."""

    call_id: str
    name: str
    custom: bool = False

    def to_json(self) -> dict[str, str]:
        """The stub of response.steer.pending's required_input."""
        if self.custom:
            return {"type": "custom_tool_call_output", "call_id": self.call_id}
        return {"type": "function_call_output", "call_id": self.call_id, "name": self.name}


def required_inputs(output: Sequence[Mapping[str, Any]]) -> tuple[RequiredInput, ...]:
    """The tool calls in a response's output (the outputs its client owes)."""
    found = []
    for item in output:
        kind = item.get("type")
        if kind in ("function_call", "custom_tool_call"):
            found.append(RequiredInput(str(item["call_id"]), str(item["name"]), kind == "custom_tool_call"))
    return tuple(found)


def parse_steer(obj: Mapping[str, Any], limits: Limits, size: int = 0) -> SteerRequest | InvalidSteer:
    """Validate a decoded response.steer event (the module docstring says what is accepted)."""
    previous = obj.get("previous_response_id")
    raw_input = obj.get("input")
    shown = previous if isinstance(previous, str) else ""
    try:
        extra = sorted(set(obj) - _KEYS)
        if extra:
            unknown = ", ".join(extra)
            raise RequestError(
                f"response.steer accepts only type, previous_response_id and input: {unknown}."
            )
        if not isinstance(previous, str) or not 0 < len(previous) <= limits.max_id_chars:
            raise RequestError("'previous_response_id' must be the id of the response to steer.")
        items = _messages(raw_input, limits)
    except RequestError as exc:
        return InvalidSteer(exc.message, shown, raw_input)
    return SteerRequest(previous, items, raw_input, size)


def _messages(value: object, limits: Limits) -> tuple[MessageItem, ...]:
    if isinstance(value, str):
        return (MessageItem("user", message_content(value, "input", limits)),)
    if not isinstance(value, list) or not value:
        raise RequestError("'input' must be a string or a non-empty array of user messages.")
    if len(value) > limits.max_items:
        raise RequestError(f"'input' may hold at most {limits.max_items} messages.")
    items = []
    for i, raw in enumerate(value):
        param = f"input[{i}]"
        if not isinstance(raw, dict) or not _MESSAGE_KEYS.issuperset(raw):
            raise RequestError(f"'{param}' must be a message with only type, role and content.")
        if raw.get("type", "message") != "message" or raw.get("role") != "user":
            raise RequestError(f"'{param}' must be a user message: steering accepts no other items.")
        items.append(MessageItem("user", message_content(raw.get("content"), f"{param}.content", limits)))
    return tuple(items)


# ------------------------------------------------------------------------------------------ answers
def accepted_event(steer: Steer, sequence_number: int) -> dict[str, Any]:
    """response.steer.accepted: the server owns the input now."""
    return {
        "type": "response.steer.accepted",
        "sequence_number": sequence_number,
        "steer": {"id": steer.steer_id, "previous_response_id": steer.previous_response_id},
    }


def pending_event(steer: Steer, required: Sequence[RequiredInput], sequence_number: int) -> dict[str, Any]:
    """response.steer.pending: the response completed waiting for tool outputs; the input stays queued
    for the client's explicit continuation."""
    return {
        "type": "response.steer.pending",
        "sequence_number": sequence_number,
        "reason": "waiting_for_required_input",
        "required_input": [stub.to_json() for stub in required],
        "steer": {"id": steer.steer_id, "previous_response_id": steer.previous_response_id},
    }


def failed_event(
    code: str,
    message: str,
    *,
    previous_response_id: str,
    raw_input: Any,
    steer_id: str | None,
    sequence_number: int,
) -> dict[str, Any]:
    """response.steer.failed: the input, as sent, returned uncommitted (with its id once accepted)."""
    steer: dict[str, Any] = {"input": raw_input, "previous_response_id": previous_response_id}
    if steer_id is not None:
        steer["id"] = steer_id
    return {
        "type": "response.steer.failed",
        "sequence_number": sequence_number,
        "error": {"type": "invalid_request_error", "code": code, "message": message},
        "steer": steer,
    }

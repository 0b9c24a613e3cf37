"""The parts of a generation request that both sides build: offered tools and the chain's agent state.

They sit in the wire contract because the box fills them (from its items) and the engines read them; the
engines and the client both import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function tool offered to the model; `parameters_json` is its JSON Schema as JSON text."""

    name: str
    description: str = ""
    parameters_json: str = "{}"


@dataclass(frozen=True, slots=True)
class AgentState:
    """What the agent policy knows of the chain (computed by the box from its items)."""

    tool_calls_since_user_message: int = 0
    user_messages: int = 0
    last_item_is_tool_output: bool = False

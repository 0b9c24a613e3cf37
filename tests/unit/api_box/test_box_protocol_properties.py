"""Property: every input is either accepted as a CreateRequest or rejected with a documented RequestError."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from api_box.core.errors import RequestError, all_codes
from api_box.core.protocol import CreateRequest, Limits, parse_create

LIMITS = Limits(max_json_depth=8, max_items=8, max_tools=4, max_text_chars=200)
CODES = all_codes()

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
fields = {
    "type": st.sampled_from(["response.create", "response.cancel", ""]) | json_values,
    "model": st.sampled_from(["m", ""]) | json_values,
    "input": json_values
    | st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["message", "function_call", "function_call_output", "x"])},
            optional={
                "role": st.sampled_from(["user", "assistant", "system", "developer", "bot"]) | json_values,
                "content": json_values | st.lists(st.fixed_dictionaries({"type": st.just("input_text")},
                                                                       optional={"text": json_values})),
                "call_id": json_values,
                "name": json_values,
                "arguments": json_values,
                "output": json_values,
            },
        ),
        max_size=10,
    ),
    "tools": json_values
    | st.lists(st.fixed_dictionaries({"type": st.just("function")}, optional={"name": json_values}),
               max_size=5),
    "tool_choice": st.sampled_from(["auto", "none", "required"]) | json_values,
    "store": json_values,
    "generate": json_values,
    "stream": json_values,
    "background": json_values,
    "previous_response_id": json_values,
    "metadata": json_values,
    "max_output_tokens": json_values,
    "temperature": json_values,
    "instructions": json_values,
}  # fmt: skip
bodies = st.fixed_dictionaries({}, optional=fields)


def check(raw: bytes | str, websocket: bool) -> None:
    """Accepted, or rejected with a documented code; any other exception fails the test."""
    rejection: RequestError | None = None
    try:
        result = parse_create(raw, LIMITS, websocket=websocket)
    except RequestError as exc:
        rejection = exc
    if rejection is None:
        assert isinstance(result, CreateRequest)
        return
    assert rejection.code in CODES
    assert rejection.status in (400, 429)
    assert rejection.message


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw, websocket=True)


@settings(max_examples=150)
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    check(orjson.dumps(value), websocket=True)
    check(orjson.dumps(value), websocket=False)


@settings(max_examples=150, deadline=None)
@given(bodies, st.booleans())
def test_near_valid_bodies(body: dict[str, Any], websocket: bool) -> None:
    check(orjson.dumps(body), websocket=websocket)


@settings(max_examples=200)
@given(st.text(max_size=100))
def test_arbitrary_text(raw: str) -> None:
    check(raw, websocket=True)

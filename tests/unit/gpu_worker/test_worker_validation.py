"""Request validation: each bad input is an InvalidRequest that names what is wrong."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from gpu_worker.core.errors import InvalidRequest, PreconditionFailed
from gpu_worker.core.validation import Limits, WorkRequest, validate
from gpu_worker.engines.base import ToolSpec
from gpu_worker.wire.model import ModelDescription, tether_description
from gpu_worker.wire.tokenizer import SPECIAL_BASE, VOCAB_SIZE

LIMITS = Limits(max_prompt_tokens=1_000, max_output_tokens=500, default_max_output_tokens=100, max_tools=2)
TOOL = ToolSpec("grep", "", json.dumps({"type": "object", "properties": {"q": {"type": "string"}}}))
MODEL = tether_description(("tether-sim",), engine="sim", context_length=1_000)
OK = WorkRequest(request_id="r", cache_key="k", base_len=0, base_digest=b"", tokens=[1, 2, 3], tools=(TOOL,))


def test_a_good_request_gets_its_defaults() -> None:
    checked = validate(replace(OK, tool_choice=""), LIMITS, MODEL)
    assert checked.max_output_tokens == 100
    assert checked.tool_choice == "auto"
    assert (
        validate(replace(OK, tool_choice="grep", max_output_tokens=500), LIMITS, MODEL).max_output_tokens
        == 500
    )
    assert validate(replace(OK, tokens=[SPECIAL_BASE, VOCAB_SIZE - 1]), LIMITS, MODEL).tokens


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokens": []}, "tokens is empty"),
        ({"tokens": [], "base_len": 5, "base_digest": b"x" * 16}, "a delta must add tokens"),
        ({"tokens": [1] * 1_001}, "1001 tokens; the limit is 1000"),
        ({"tokens": [1] * 10, "base_len": 991, "base_digest": b"x" * 16}, "1001 tokens"),
        ({"tokens": [VOCAB_SIZE]}, "outside the vocabulary"),
        ({"tokens": [200_050]}, "not assigned"),
        ({"max_output_tokens": 501}, "max_output_tokens=501 exceeds"),
        ({"max_output_tokens": 2**31}, "exceeds"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"base_len": 3, "base_digest": b"short"}, "base_digest must be 16 bytes"),
        ({"base_len": 3, "cache_key": "", "base_digest": b"x" * 16}, "needs a cache_key"),
        ({"cache_key": "~anon"}, "reserved"),
        ({"cache_key": "k" * 300}, "cache_key is longer"),
        ({"request_id": "r" * 300}, "request_id is longer"),
        ({"tools": (TOOL, TOOL)}, "offered twice"),
        ({"tools": (TOOL, replace(TOOL, name="a"), replace(TOOL, name="b"))}, "3 tools offered"),
        ({"tools": (replace(TOOL, name="bad name!"),)}, "must match"),
        ({"tools": (replace(TOOL, parameters_json="{oops"),)}, "not valid JSON"),
        ({"tools": (replace(TOOL, parameters_json="[]"),)}, "must be a JSON object"),
        ({"tool_choice": "write_file"}, "neither auto/none/required nor an offered tool"),
        ({"tool_choice": "required", "tools": ()}, "needs at least one tool"),
        ({"metadata": {f"k{i}": "v" for i in range(40)}}, "metadata entries"),
        ({"metadata": {"k": "v" * 5000}}, "metadata is"),
    ],
)
def test_bad_requests_are_invalid_with_a_clear_message(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as exc:
        validate(replace(OK, **change), LIMITS, MODEL)  # type: ignore[arg-type]
    assert exc.value.code == "INVALID_ARGUMENT"


def test_limits_must_be_coherent() -> None:
    with pytest.raises(ValueError, match="default_max_output_tokens"):
        Limits(max_output_tokens=10, default_max_output_tokens=20)


def test_a_request_for_another_tokenizer_is_refused_as_a_precondition() -> None:
    other = ModelDescription(
        names=("real",),
        engine="torch",
        tokenizer_kind="hf",
        tokenizer_json='{"model": {}}',
        chat_format="chatml",
        tool_call_format="hermes",
        vocab_size=100,
        context_length=50,
        stop_token_ids=(2,),
    )
    assert validate(replace(OK, tokenizer_fingerprint=MODEL.fingerprint), LIMITS, MODEL).top_p == 1.0
    with pytest.raises(PreconditionFailed, match="tokenizer_mismatch") as exc:
        validate(replace(OK, tokenizer_fingerprint=other.fingerprint), LIMITS, MODEL)
    assert exc.value.reason == "tokenizer_mismatch"
    with pytest.raises(InvalidRequest, match="outside the vocabulary"):
        validate(replace(OK, tokens=[1, 100]), LIMITS, other)
    with pytest.raises(InvalidRequest, match="the limit is 50"):
        validate(replace(OK, tokens=list(range(60))), LIMITS, other)
    with pytest.raises(InvalidRequest, match="top_p"):
        validate(replace(OK, top_p=1.5), LIMITS, MODEL)

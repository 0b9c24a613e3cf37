"""`prompt_cache_options` (SDK 3.63): the values the SDK allows, the retention each maps to, and a 400
naming the field for every bad value."""

from __future__ import annotations

import typing
from typing import Any

import orjson
import pytest
from openai.types.responses import response_create_params

from api_box.core import errors
from api_box.core.protocol import CACHE_TTL_SECONDS, Limits, PromptCacheOptions, parse_create

LIMITS = Limits()


def ws(**fields: Any) -> bytes:
    return orjson.dumps({"type": "response.create", "model": "m", "input": "x", **fields})


def test_the_accepted_values_are_the_sdks() -> None:
    hints = typing.get_type_hints(response_create_params.PromptCacheOptions)
    assert set(typing.get_args(hints["ttl"])) == set(CACHE_TTL_SECONDS)
    assert set(typing.get_args(hints["mode"])) == {"implicit", "explicit"}
    assert set(hints) == {"comparison_response_id", "mode", "prewarm", "ttl"}


@pytest.mark.parametrize(
    ("options", "seconds"),
    [
        ({}, 1_800),  # the SDK's default ttl
        ({"ttl": "30m"}, 1_800),
        ({"ttl": "12h"}, 43_200),
        ({"ttl": "12h", "mode": "implicit"}, 43_200),
        ({"ttl": "12h", "mode": "explicit"}, 0),  # no implicit breakpoint to retain
        ({"prewarm": True}, 1_800),
    ],
)
def test_retention_follows_the_ttl(options: dict[str, Any], seconds: int) -> None:
    create = parse_create(ws(prompt_cache_options=options), LIMITS, websocket=True)
    assert create.prompt_cache_options is not None
    assert create.prompt_cache_options.retain_seconds == seconds


def test_without_options_nothing_is_retained_and_prewarm_overrides_generate() -> None:
    assert parse_create(ws(), LIMITS, websocket=True).prompt_cache_options is None
    create = parse_create(
        ws(generate=True, prompt_cache_options={"prewarm": True, "ttl": "12h"}), LIMITS, websocket=True
    )
    assert create.generate is False
    assert create.prompt_cache_options == PromptCacheOptions(ttl="12h", prewarm=True)
    assert parse_create(ws(prompt_cache_options={"prewarm": False}), LIMITS, websocket=True).generate


@pytest.mark.parametrize(
    ("options", "error", "param"),
    [
        ("30m", errors.InvalidType, "prompt_cache_options"),
        (["30m"], errors.InvalidType, "prompt_cache_options"),
        ({"ttl": "1h"}, errors.InvalidValue, "prompt_cache_options.ttl"),
        ({"ttl": "24h"}, errors.InvalidValue, "prompt_cache_options.ttl"),
        ({"ttl": 1800}, errors.InvalidValue, "prompt_cache_options.ttl"),
        ({"ttl": ["30m"]}, errors.InvalidValue, "prompt_cache_options.ttl"),
        ({"ttl": {"30m": 1}}, errors.InvalidValue, "prompt_cache_options.ttl"),
        ({"mode": "always"}, errors.InvalidValue, "prompt_cache_options.mode"),
        ({"mode": ["implicit"]}, errors.InvalidValue, "prompt_cache_options.mode"),
        ({"prewarm": "yes"}, errors.InvalidType, "prompt_cache_options.prewarm"),
        ({"prewarm": 1}, errors.InvalidType, "prompt_cache_options.prewarm"),
        ({"comparison_response_id": 7}, errors.InvalidType, "prompt_cache_options.comparison_response_id"),
    ],
)
def test_bad_values_are_a_400_naming_the_field(
    options: Any, error: type[errors.RequestError], param: str
) -> None:
    with pytest.raises(error) as exc:
        parse_create(ws(prompt_cache_options=options), LIMITS, websocket=True)
    assert (exc.value.param, exc.value.status) == (param, 400)

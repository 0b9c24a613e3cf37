"""Every tool type and request field real clients send (the Codex CLI, SDK 3.63): parsed, echoed, offered."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from api_box.config import Settings
from api_box.core import errors
from api_box.core.protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    Limits,
    MessageItem,
    PromptCacheOptions,
    RequestWarning,
    item_json,
    parse_create,
)

LIMITS = Limits()
SCHEMA = {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}
EXEC = {
    "type": "function",
    "name": "exec_command",
    "description": "Run it.",
    "strict": False,
    "parameters": SCHEMA,
}
MULTI_AGENT = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Sub-agents.",
    "tools": [
        {"type": "function", "name": "spawn_agent", "description": "Spawn.", "parameters": SCHEMA},
        {
            "type": "function",
            "name": "wait_agent",
            "description": "Wait.",
            "parameters": SCHEMA,
            "strict": True,
        },
    ],
}
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Apply a patch.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'},
}


def ws(**fields: Any) -> bytes:
    return orjson.dumps({"type": "response.create", "model": "m", **fields})


def function(name: str, description: str, *, strict: bool | None) -> dict[str, Any]:
    """A function tool as a ResponseResource echoes it."""
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": SCHEMA,
        "strict": strict,
    }


def codex_create(**fields: Any) -> bytes:
    """A first response.create shaped like the Codex CLI 0.171's (tools, developer messages, options)."""
    body: dict[str, Any] = {
        "stream": True,
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "env"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]},
        ],
        "tools": [EXEC, MULTI_AGENT, {"type": "web_search", "external_web_access": False}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0198-thread",
        "generate": False,
        "client_metadata": {"thread_id": "0198-thread", "x-codex-turn-metadata": "{}"},
    }
    return ws(**(body | fields))


def test_a_codex_first_request_is_accepted_with_its_namespace_offered_and_web_search_omitted() -> None:
    create = parse_create(codex_create(), LIMITS, websocket=True)
    assert [t.model_name for t in create.tools] == [
        "exec_command",
        "multi_agent_v1.spawn_agent",
        "multi_agent_v1.wait_agent",
    ]
    spawn = create.tools[1]
    assert (spawn.name, spawn.namespace, spawn.kind, spawn.parameters) == (
        "spawn_agent",
        "multi_agent_v1",
        "function",
        SCHEMA,
    )
    assert [item.role for item in create.input if isinstance(item, MessageItem)] == ["developer"] * 2 + [
        "user"
    ]
    assert create.warnings == (
        RequestWarning(
            "tool_omitted",
            "The web_search tool cannot run on this deployment; it was not offered to the model.",
            "tools[2]",
        ),
    )
    # The response echoes the tools as sent: the namespace with its tools, the omitted hosted tool.
    assert create.tools_json() == [
        function("exec_command", "Run it.", strict=False),
        {
            "type": "namespace",
            "name": "multi_agent_v1",
            "description": "Sub-agents.",
            "tools": [
                function("spawn_agent", "Spawn.", strict=None),
                function("wait_agent", "Wait.", strict=True),
            ],
        },
        {"type": "web_search", "external_web_access": False},
    ]
    assert create.reasoning == {"effort": None, "summary": "auto"}
    assert create.include == ("reasoning.encrypted_content",)
    assert (create.prompt_cache_key, create.parallel_tool_calls, create.store) == ("0198-thread", True, False)
    assert create.generate is False


def test_under_the_reject_policy_a_hosted_tool_is_unsupported_parameter() -> None:
    limits = Limits(hosted_tools="reject")
    with pytest.raises(errors.UnsupportedParameter) as caught:
        parse_create(codex_create(), limits, websocket=True)
    assert caught.value.param == "tools[2].type"
    assert "web_search" in caught.value.message
    with pytest.raises(errors.UnsupportedParameter) as caught:
        parse_create(ws(tool_choice={"type": "file_search"}), limits, websocket=True)
    assert caught.value.param == "tool_choice.type"
    parse_create(ws(tools=[EXEC, MULTI_AGENT, APPLY_PATCH]), limits, websocket=True)  # none is hosted


def test_the_policy_must_be_known() -> None:
    with pytest.raises(ValueError, match="hosted_tools"):
        Limits(hosted_tools="ignore")


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "web_search_preview", "search_context_size": "low"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "code_interpreter", "container": {"type": "auto"}},
        {
            "type": "computer_use_preview",
            "display_width": 1024,
            "display_height": 768,
            "environment": "linux",
        },
        {"type": "image_generation"},
        {"type": "local_shell"},
        {"type": "shell"},
        {"type": "apply_patch"},
        {"type": "tool_search"},
        {"type": "a_tool_type_from_the_future", "x": 1},
    ],
)
def test_every_other_tool_type_is_omitted_and_echoed(tool: dict[str, Any]) -> None:
    create = parse_create(ws(tools=[tool, EXEC]), LIMITS, websocket=True)
    assert [t.name for t in create.tools] == ["exec_command"]
    assert create.tools_json()[0] == tool
    assert [(w.code, w.param) for w in create.warnings] == [("tool_omitted", "tools[0]")]


def test_an_mcp_tool_is_echoed_without_its_credentials() -> None:
    mcp = {
        "type": "mcp",
        "server_label": "docs",
        "server_url": "https://mcp.example.com",
        "authorization": "secret-token",
        "headers": {"X-Key": "secret"},
    }
    create = parse_create(ws(tools=[mcp]), LIMITS, websocket=True)
    assert create.tools == ()
    assert create.tools_json() == [
        {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com"}
    ]


def test_custom_tools_keep_their_format_and_calls_round_trip_as_custom_items() -> None:
    free = {"type": "custom", "name": "note"}
    create = parse_create(
        ws(
            tools=[APPLY_PATCH, free, {"type": "custom", "name": "t", "format": {"type": "text"}}],
            input=[
                {
                    "type": "custom_tool_call",
                    "call_id": "call_1",
                    "name": "apply_patch",
                    "input": "*** Begin Patch",
                },
                {"type": "custom_tool_call_output", "call_id": "call_1", "output": "applied"},
            ],
        ),
        LIMITS,
        websocket=True,
    )
    patch = create.tools[0]
    assert (patch.kind, patch.model_name, patch.parameters) == ("custom", "apply_patch", None)
    assert patch.format == APPLY_PATCH["format"]
    assert create.tools[1].format is None
    assert create.tools_json()[0] == APPLY_PATCH
    assert create.tools_json()[1] == {
        "type": "custom",
        "name": "note",
        "description": None,
        "format": {"type": "text"},
    }
    call, output = create.input
    assert call == FunctionCallItem("call_1", "apply_patch", "*** Begin Patch", kind="custom")
    assert output == FunctionCallOutputItem("call_1", "applied", kind="custom")
    assert item_json(call, "ctc_1") == {
        "id": "ctc_1",
        "type": "custom_tool_call",
        "call_id": "call_1",
        "name": "apply_patch",
        "input": "*** Begin Patch",
    }
    assert item_json(output, "ctco_1")["type"] == "custom_tool_call_output"


def test_a_namespace_may_hold_custom_tools() -> None:
    namespace = {"type": "namespace", "name": "edit", "description": "Edits.", "tools": [APPLY_PATCH]}
    (tool,) = parse_create(ws(tools=[namespace]), LIMITS, websocket=True).tools
    assert (tool.kind, tool.model_name) == ("custom", "edit.apply_patch")


def test_a_namespaced_function_call_comes_back_with_its_namespace() -> None:
    raw = {
        "type": "function_call",
        "call_id": "call_2",
        "name": "spawn_agent",
        "namespace": "multi_agent_v1",
        "arguments": "{}",
        "id": "fc_2",
    }
    (item,) = parse_create(ws(input=[raw]), LIMITS, websocket=True).input
    assert isinstance(item, FunctionCallItem)
    assert (item.model_name, item.namespace) == ("multi_agent_v1.spawn_agent", "multi_agent_v1")
    assert item_json(item, "fc_2") == raw | {"status": "completed"}


def test_reasoning_items_are_accepted_and_skipped() -> None:
    create = parse_create(
        ws(
            input=[
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
                {"role": "user", "content": "go on"},
            ]
        ),
        LIMITS,
        websocket=True,
    )
    assert create.input == (MessageItem("user", "go on"),)


@pytest.mark.parametrize(
    ("choice", "name", "echo"),
    [
        ({"type": "function", "name": "multi_agent_v1.spawn_agent"}, "multi_agent_v1.spawn_agent", None),
        ({"type": "function", "name": "wait_agent"}, "multi_agent_v1.wait_agent", None),
        (
            {"type": "function", "name": "spawn_agent", "namespace": "multi_agent_v1"},
            "multi_agent_v1.spawn_agent",
            None,
        ),
        ({"type": "custom", "name": "apply_patch"}, "apply_patch", None),
        ({"type": "required"}, "required", None),
        (
            {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "exec_command"}],
            },
            "required",
            {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "exec_command"}],
            },
        ),
    ],
)
def test_tool_choice_names_tools_by_what_the_model_sees(
    choice: dict[str, Any], name: str, echo: dict[str, Any] | None
) -> None:
    create = parse_create(
        ws(tools=[EXEC, MULTI_AGENT, APPLY_PATCH], tool_choice=choice), LIMITS, websocket=True
    )
    assert create.tool_choice == name
    assert create.tool_choice_echo == echo
    assert create.warnings == ()


def test_tool_choice_json_gives_the_tool_its_type() -> None:
    tools = [EXEC, MULTI_AGENT, APPLY_PATCH]
    create = parse_create(
        ws(tools=tools, tool_choice={"type": "custom", "name": "apply_patch"}), LIMITS, websocket=True
    )
    assert create.tool_choice_json() == {"type": "custom", "name": "apply_patch"}
    create = parse_create(
        ws(tools=tools, tool_choice={"type": "function", "name": "wait_agent"}), LIMITS, websocket=True
    )
    assert create.tool_choice_json() == {"type": "function", "name": "wait_agent"}


def test_a_hosted_tool_choice_falls_back_to_auto_and_says_so() -> None:
    choice = {"type": "web_search_preview"}
    create = parse_create(ws(tools=[EXEC, choice], tool_choice=choice), LIMITS, websocket=True)
    assert (create.tool_choice, create.tool_choice_json()) == ("auto", choice)
    assert [w.code for w in create.warnings] == ["tool_omitted", "tool_choice_omitted"]
    # "required" with nothing the model can call is "auto" too, rather than a refusal.
    create = parse_create(ws(tools=[choice], tool_choice="required"), LIMITS, websocket=True)
    assert create.tool_choice == "auto"
    assert [w.code for w in create.warnings] == ["tool_omitted", "tool_choice_omitted"]


def test_the_other_sdk_fields_are_kept_for_the_echo() -> None:
    schema_format = {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}
    create = parse_create(
        ws(
            input="x",
            text={"format": schema_format, "verbosity": "low"},
            reasoning={"effort": "high", "generate_summary": "concise"},
            service_tier="flex",
            max_tool_calls=5,
            top_logprobs=3,
            prompt_cache_options={"mode": "explicit", "ttl": "12h", "comparison_response_id": "resp_0"},
            prompt_cache_retention="24h",
            stream_options={"include_obfuscation": False},
            context_management=[{"type": "compaction", "compact_threshold": 1000}],
            user="u",
            safety_identifier="s",
            moderation=None,
        ),
        LIMITS,
        websocket=True,
    )
    assert (create.text_format, create.verbosity) == (schema_format, "low")
    assert create.reasoning == {"effort": "high", "summary": "concise"}
    assert (create.service_tier, create.max_tool_calls, create.top_logprobs) == ("flex", 5, 3)
    assert create.prompt_cache_options == PromptCacheOptions("explicit", "12h", False, "resp_0")
    assert create.generate is True


def test_prompt_cache_prewarm_means_no_generation() -> None:
    create = parse_create(ws(input="x", prompt_cache_options={"prewarm": True}), LIMITS, websocket=True)
    assert create.generate is False
    assert create.prompt_cache_options == PromptCacheOptions(prewarm=True)


def test_namespaces_count_their_tools_against_the_limit() -> None:
    with pytest.raises(errors.TooManyTools):
        parse_create(ws(tools=[MULTI_AGENT]), Limits(max_tools=1), websocket=True)


def test_a_tool_offered_twice_through_a_namespace_is_refused_only_when_the_model_would_see_it_twice() -> None:
    twice = {
        "type": "namespace",
        "name": "multi_agent_v1",
        "tools": [{"type": "function", "name": "spawn_agent"}],
    }
    with pytest.raises(errors.InvalidValue):
        parse_create(ws(tools=[MULTI_AGENT, twice]), LIMITS, websocket=True)
    same_name = {
        "type": "function",
        "name": "spawn_agent",
    }  # the model sees spawn_agent and multi_agent_v1.spawn_agent
    assert len(parse_create(ws(tools=[MULTI_AGENT, same_name]), LIMITS, websocket=True).tools) == 3


def test_function_tool_defaults_are_a_plain_function() -> None:
    tool = FunctionTool("f")
    assert (tool.kind, tool.namespace, tool.model_name) == ("function", None, "f")
    assert tool.to_json()["type"] == "function"


def test_the_box_setting_sets_the_policy() -> None:
    assert Settings().limits.hosted_tools == "omit"
    assert Settings.from_env({"TETHER_BOX_HOSTED_TOOLS": "reject"}).limits.hosted_tools == "reject"
    with pytest.raises(ValueError, match="hosted_tools"):
        Settings.from_env({"TETHER_BOX_HOSTED_TOOLS": "drop"})

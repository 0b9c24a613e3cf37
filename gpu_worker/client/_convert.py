"""Conversion between the client's dataclasses and the generated protobuf messages."""

from __future__ import annotations

from gpu_worker.client.types import (
    CallDelta,
    CallStart,
    Done,
    GenerationRequest,
    Prefill,
    TextDelta,
    ToolSpec,
    WorkerEvent,
)
from gpu_worker.wire._pb import worker_pb2 as pb


def request_to_pb(req: GenerationRequest, *, full: bool) -> pb.GenerateRequest:
    """The wire request: the whole chain (`full` or nothing held) or the delta after `held_len`."""
    delta = not full and req.held_len > 0
    return pb.GenerateRequest(
        request_id=req.request_id,
        cache_key=req.cache_key or "",
        base_len=req.held_len if delta else 0,
        base_digest=req.held_digest if delta else b"",
        tokens=req.chain[req.held_len :] if delta else req.chain,
        max_output_tokens=req.max_output_tokens,
        tools=[_tool_to_pb(t) for t in req.tools],
        tool_choice=req.tool_choice,
        metadata=dict(req.metadata),
        model=req.model,
        agent=pb.AgentState(
            tool_calls_since_user_message=req.agent.tool_calls_since_user_message,
            user_messages=req.agent.user_messages,
            last_item_is_tool_output=req.agent.last_item_is_tool_output,
        ),
        seed=req.seed,
        temperature=req.temperature,
        top_p=req.top_p,
        generate=req.generate,
        tokenizer_fingerprint=req.tokenizer_fingerprint,
        retain_seconds=req.retain_seconds,
    )


def _tool_to_pb(tool: ToolSpec) -> pb.Tool:
    return pb.Tool(name=tool.name, description=tool.description, parameters_json=tool.parameters_json)


def event_from_pb(msg: pb.GenerateEvent, worker: str) -> WorkerEvent | None:
    """The client event of one wire event (None for an empty oneof, which a newer worker may send)."""
    kind = msg.WhichOneof("event")
    if kind == "prefill":
        p = msg.prefill
        return Prefill(p.prompt_tokens, p.cached_tokens, p.computed_tokens, p.queue_seconds, worker)
    if kind == "text":
        return TextDelta(msg.text.text, msg.text.tokens)
    if kind == "call_start":
        return CallStart(msg.call_start.call_id, msg.call_start.name)
    if kind == "call_delta":
        return CallDelta(msg.call_delta.arguments, msg.call_delta.tokens)
    if kind == "done":
        d = msg.done
        return Done(
            finish_reason=d.finish_reason,
            prompt_tokens=d.prompt_tokens,
            cached_tokens=d.cached_tokens,
            output_tokens=d.output_tokens,
            output_token_ids=tuple(d.output_token_ids),
            chain_len=d.chain_len,
            chain_digest=bytes(d.chain_digest),
            worker=worker,
            retained_seconds=d.retained_seconds,
        )
    return None

"""The `ModelDescription` of a checkpoint (gpu_worker/wire/model.py): what the box needs to talk to it.

From a checkpoint (gpu_worker/engines/checkpoint.py) that brings its own tokenizer:

- tokenizer: kind "hf", the `tokenizer.json` text (a GGUF file's is built from its metadata);
- chat format, from the chat template: `<|im_start|>` -> "chatml", `<|start_header_id|>` -> "llama3";
  any other template is refused (no renderer for it). Tool-call format: "hermes" for ChatML,
  "llama3_json" for Llama 3;
- stop ids: the end-of-sequence id(s) the checkpoint names, plus the format's end-of-turn tokens present
  in the vocabulary (`<|im_end|>`, `<|endoftext|>`; `<|eot_id|>`, `<|eom_id|>`, `<|end_of_text|>`);
- special ids: the tokenizer's added tokens marked special; the BOS id when the checkpoint names one;
- chat options: ChatML `default_system`, the system text the template inserts when a conversation has
  none (found by rendering the template on one user message);
- names: the checkpoint's name (directory, or GGUF file without its quantization suffix), unless given.

A checkpoint without a tokenizer (dummy weights, or a checkpoint trained on Tether's vocabulary) gets
Tether's own description: o200k ids, the `tether` chat and tool-call formats, `[END]` as its stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpu_worker.engines.checkpoint import Checkpoint, CheckpointError
from gpu_worker.wire.model import ModelDescription, tether_description

__all__ = ["END_OF_TURN_TOKENS", "describe_checkpoint", "detect_chat_format", "template_default_system"]

# chat format -> (tool-call format, end-of-turn tokens that stop generation when present)
END_OF_TURN_TOKENS: dict[str, tuple[str, tuple[str, ...]]] = {
    "chatml": ("hermes", ("<|im_end|>", "<|endoftext|>")),
    "llama3": ("llama3_json", ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>")),
}
_MARKERS = (("<|im_start|>", "chatml"), ("<|start_header_id|>", "llama3"))


def detect_chat_format(template: str) -> str:
    """The chat format a Jinja chat template writes; CheckpointError when none Tether renders."""
    for marker, chat_format in _MARKERS:
        if marker in template:
            return chat_format
    if not template:
        raise CheckpointError("the checkpoint has no chat template (tokenizer_config.json chat_template)")
    raise CheckpointError(
        "the chat template is neither ChatML (<|im_start|>) nor Llama 3 (<|start_header_id|>); "
        "Tether renders only those formats"
    )


def template_default_system(template: str, variables: dict[str, Any] | None = None) -> str:
    """The system text a ChatML template inserts before a conversation that has no system message."""
    from gpu_worker.wire.chat.reference import render_template

    try:
        text = render_template(template, [{"role": "user", "content": "x"}], variables=variables)
    except Exception as exc:  # a template that fails here fails for every request: say so at load
        raise CheckpointError(f"the chat template does not render: {exc}") from exc
    head = "<|im_start|>system\n"
    start = text.find(head)
    user = text.find("<|im_start|>user")
    if start < 0 or (0 <= user < start):
        return ""
    end = text.find("<|im_end|>", start)
    return text[start + len(head) : end] if end > 0 else ""


def describe_checkpoint(
    checkpoint: Checkpoint,
    *,
    vocab_size: int,
    context_length: int,
    engine: str = "torch",
    names: Sequence[str] = (),
) -> ModelDescription:
    """The description of a loaded checkpoint (`vocab_size`/`context_length` from its config)."""
    model_names = tuple(names) or (checkpoint.model_name(),)
    tokenizer_json = checkpoint.tokenizer_json()
    if tokenizer_json is None:
        return tether_description(model_names, engine=engine, context_length=context_length)
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise CheckpointError("describing a checkpoint's tokenizer needs the `tokenizers` package") from exc
    try:
        tokenizer = Tokenizer.from_str(tokenizer_json)
    except Exception as exc:  # tokenizers raises its own Exception type
        raise CheckpointError(f"{checkpoint.path}: tokenizer.json does not load: {exc}") from exc
    template = checkpoint.chat_template
    chat_format = detect_chat_format(template)
    tool_call_format, end_tokens = END_OF_TURN_TOKENS[chat_format]
    specials = checkpoint.special_tokens()

    def token_id(value: Any) -> int | None:
        if isinstance(value, int):
            return value
        return tokenizer.token_to_id(value) if isinstance(value, str) else None

    bos = token_id(specials.get("bos"))
    stops: list[int] = []
    for candidate in [specials.get("eos"), *specials.get("eos_ids", []), *end_tokens]:
        found = token_id(candidate)
        if found is not None and found not in stops:
            stops.append(found)
    if not stops:
        raise CheckpointError(f"{checkpoint.path}: no end-of-sequence or end-of-turn token in its tokenizer")
    added = tokenizer.get_added_tokens_decoder()
    special_ids = tuple(sorted(i for i, token in added.items() if token.special))
    options: dict[str, str] = {}
    if chat_format == "chatml":
        text_of = {"bos_token": bos, "eos_token": stops[0]}
        variables = {k: tokenizer.id_to_token(v) for k, v in text_of.items() if v is not None}
        default_system = template_default_system(template, variables)
        if default_system:
            options["default_system"] = default_system
    return ModelDescription(
        names=model_names,
        engine=engine,
        tokenizer_kind="hf",
        tokenizer_json=tokenizer_json,
        chat_format=chat_format,
        tool_call_format=tool_call_format,
        vocab_size=vocab_size,
        context_length=context_length,
        stop_token_ids=tuple(stops),
        chat_template=template,
        chat_options=options,
        bos_token_id=-1 if bos is None else bos,
        special_token_ids=special_ids,
    )

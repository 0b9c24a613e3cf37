"""What a worker says of its model (the `DescribeModel` RPC), as a plain value both sides share.

The worker owns the model; the box learns from this description everything it needs to turn Responses
items into the model's own token ids: the tokenizer (a Hugging Face `tokenizer.json`, or Tether's o200k
tokenizer for the `sim` engine and dummy weights), the chat format and its per-model options, the stop
tokens, the context length and the tool-call format. Two descriptions with the same tokenizer
fingerprint tokenize identically, so the box keeps one tokenizer per fingerprint and sends the
fingerprint with every request; a worker refuses a request rendered for another tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

__all__ = [
    "CHAT_FORMATS",
    "TOKENIZER_KINDS",
    "TOOL_CALL_FORMATS",
    "ModelDescription",
    "description_from_pb",
    "description_to_pb",
    "tether_description",
    "tokenizer_fingerprint",
]

TOKENIZER_KINDS = ("hf", "o200k")
CHAT_FORMATS = ("chatml", "llama3", "tether")
TOOL_CALL_FORMATS = ("hermes", "llama3_json", "tether")


def tokenizer_fingerprint(kind: str, tokenizer_json: str) -> str:
    """Hex SHA-256 identifying a tokenizer: equal fingerprints encode every text to the same ids."""
    h = sha256()
    h.update(kind.encode())
    h.update(b"\x00")
    h.update(tokenizer_json.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """One worker's model (see the module docstring; gpu_worker/proto/worker.proto `ModelDescription`)."""

    names: tuple[str, ...]
    engine: str
    tokenizer_kind: str
    tokenizer_json: str
    chat_format: str
    tool_call_format: str
    vocab_size: int
    context_length: int
    stop_token_ids: tuple[int, ...]
    chat_template: str = ""
    chat_options: Mapping[str, str] = field(default_factory=dict)
    bos_token_id: int = -1
    special_token_ids: tuple[int, ...] = ()
    vision: bool = False
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.names or any(not n for n in self.names):
            raise ValueError("a model description needs at least one non-empty name")
        if self.tokenizer_kind not in TOKENIZER_KINDS:
            raise ValueError(f"tokenizer_kind must be one of {TOKENIZER_KINDS}, got {self.tokenizer_kind!r}")
        if self.tokenizer_kind == "hf" and not self.tokenizer_json:
            raise ValueError("an hf tokenizer needs its tokenizer.json")
        if self.chat_format not in CHAT_FORMATS:
            raise ValueError(f"chat_format must be one of {CHAT_FORMATS}, got {self.chat_format!r}")
        if self.tool_call_format not in TOOL_CALL_FORMATS:
            raise ValueError(
                f"tool_call_format must be one of {TOOL_CALL_FORMATS}, got {self.tool_call_format!r}"
            )
        if self.vocab_size < 1 or self.context_length < 1:
            raise ValueError("vocab_size and context_length must be positive")
        if not self.stop_token_ids:
            raise ValueError("a model needs at least one stop token")
        expected = tokenizer_fingerprint(self.tokenizer_kind, self.tokenizer_json)
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", expected)
        elif self.fingerprint != expected:
            raise ValueError("the tokenizer fingerprint does not match the tokenizer")

    @property
    def name(self) -> str:
        """The canonical model name."""
        return self.names[0]


def tether_description(names: tuple[str, ...], *, engine: str, context_length: int) -> ModelDescription:
    """Tether's own format on o200k ids: what the `sim` engine and dummy weights serve."""
    from gpu_worker.wire.tokenizer import VOCAB_SIZE, Special

    return ModelDescription(
        names=names,
        engine=engine,
        tokenizer_kind="o200k",
        tokenizer_json="",
        chat_format="tether",
        tool_call_format="tether",
        vocab_size=VOCAB_SIZE,
        context_length=context_length,
        stop_token_ids=(int(Special.END),),
        special_token_ids=tuple(int(s) for s in Special),
    )


def description_to_pb(description: ModelDescription) -> Any:
    """The wire message (gpu_worker/proto/worker.proto ModelDescription)."""
    from gpu_worker.wire._pb import worker_pb2 as pb

    return pb.ModelDescription(
        names=list(description.names),
        engine=description.engine,
        tokenizer_kind=description.tokenizer_kind,
        tokenizer_json=description.tokenizer_json,
        tokenizer_fingerprint=description.fingerprint,
        chat_format=description.chat_format,
        chat_template=description.chat_template,
        chat_options=dict(description.chat_options),
        bos_token_id=description.bos_token_id,
        stop_token_ids=list(description.stop_token_ids),
        special_token_ids=list(description.special_token_ids),
        vocab_size=description.vocab_size,
        context_length=description.context_length,
        tool_call_format=description.tool_call_format,
        vision=description.vision,
    )


def description_from_pb(message: Any) -> ModelDescription:
    """Read the wire message back; ValueError when it is not a valid description."""
    return ModelDescription(
        names=tuple(message.names),
        engine=message.engine,
        tokenizer_kind=message.tokenizer_kind,
        tokenizer_json=message.tokenizer_json,
        fingerprint=message.tokenizer_fingerprint,
        chat_format=message.chat_format,
        chat_template=message.chat_template,
        chat_options=dict(message.chat_options),
        bos_token_id=message.bos_token_id,
        stop_token_ids=tuple(message.stop_token_ids),
        special_token_ids=tuple(message.special_token_ids),
        vocab_size=message.vocab_size,
        context_length=message.context_length,
        tool_call_format=message.tool_call_format,
        vision=message.vision,
    )

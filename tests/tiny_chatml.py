"""A tiny ChatML model directory for tests that need a real Hugging Face tokenizer but no weights.

`write_tiny_chatml(path)` writes `config.json`, `tokenizer.json` and `tokenizer_config.json` (the ChatML +
Hermes tools reference template of tests/unit/gpu_worker/templates): a byte-level tokenizer with one id per
byte (ids 0-255, no merges), so any text round-trips, plus the ChatML specials and the Hermes tool tags as
added tokens. `ids_of(text)` gives the ids the tokenizer encodes a text to.
"""

from __future__ import annotations

import json
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "unit" / "gpu_worker" / "templates" / "hermes_tools.jinja"
ENDOFTEXT, IM_START, IM_END, TOOL_CALL, TOOL_CALL_END = 256, 257, 258, 259, 260
VOCAB_SIZE = 261
CONTEXT = 4096


def tokenizer_json() -> str:
    """The tokenizer.json text (ids as the module docstring says)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={char: i for i, char in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(text, special=True) for text in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")]
    )
    tokenizer.add_tokens([AddedToken("<tool_call>"), AddedToken("</tool_call>")])
    text: str = tokenizer.to_str()
    return text


def ids_of(text: str) -> list[int]:
    """The ids of `text` (one per UTF-8 byte; the tool tags as their added ids)."""
    from gpu_worker.wire.tokenizer import HfTokenizer

    return HfTokenizer(tokenizer_json()).encode(text)


def write_tiny_chatml(path: Path) -> Path:
    """Write the model directory at `path` (created) and return it."""
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": VOCAB_SIZE,
        "max_position_embeddings": CONTEXT,
    }
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (path / "tokenizer.json").write_text(tokenizer_json(), encoding="utf-8")
    tokenizer_config = {
        "chat_template": TEMPLATE.read_text(encoding="utf-8"),
        "eos_token": "<|im_end|>",
        "bos_token": None,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    return path

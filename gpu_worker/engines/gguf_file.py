"""A GGUF checkpoint (llama.cpp's single-file format) read as Hugging Face Llama parts, without torch.

A GGUF file holds the weights (often quantized), the model's shape and the tokenizer as metadata
(`llama.*`, `tokenizer.ggml.*`, `tokenizer.chat_template`). `GgufFile` turns them into what the rest of
the torch engine reads from a Hugging Face directory:

- `hf_config()`: a `config.json`-shaped dict (gpu_worker/engines/torch_model.py `ModelConfig`);
- `tensors()`: float32 numpy arrays under Hugging Face Llama names, dequantized with the `gguf` package.
  llama.cpp's converter stores the Q and K projections with their rows permuted (rotary pairs
  interleaved); they are permuted back, which gives exactly the Hugging Face weights;
- `tokenizer_json()`: a Hugging Face `tokenizer.json` (the `tokenizers` library) built from the
  vocabulary, merges and token types (see `_BYTE_LEVEL_SPLITS` for the pre-tokenizers it knows);
- the chat template, the special token ids and a model name.

Only the Llama architecture is read (`general.architecture` = `llama`, which also covers Mistral-style
files); rotary scaling (`rope_freqs`, `llama.rope.scaling.*`) is refused as the model does not implement it.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from gpu_worker.engines.checkpoint import CheckpointError

__all__ = ["GgufFile", "TokenType"]

_ARCHITECTURES = ("llama",)
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.weight")
# A quantization suffix of a file name: SmolLM2-135M-Instruct.Q4_1 -> SmolLM2-135M-Instruct.
_QUANT_SUFFIX = re.compile(r"[.-](?:[QqIi]{1,2}Q?\d[\w]*|[Ff](?:16|32)|[Bb][Ff]16)$")


class TokenType:
    """llama.cpp's token types (`tokenizer.ggml.token_type`)."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# Byte-level BPE pre-tokenizers by `tokenizer.ggml.pre`: the regex splits of llama.cpp's llama-vocab.cpp,
# written as the Hugging Face tokenizer.json of those models writes them. Value: (splits, digits split
# one by one, NFC normalizer, ignore_merges). None as a split list: the GPT-2 split of ByteLevel itself.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_BYTE_LEVEL_SPLITS: dict[str, tuple[str | None, bool, bool, bool]] = {
    "gpt2": (None, False, False, False),
    "gpt-2": (None, False, False, False),
    "mpt": (None, False, False, False),
    "olmo": (None, False, False, False),
    "smollm": (None, True, False, False),
    "starcoder": (None, True, False, False),
    "refact": (None, True, False, False),
    "codeshell": (None, True, False, False),
    "llama-bpe": (_LLAMA3_SPLIT, False, False, True),
    "llama3": (_LLAMA3_SPLIT, False, False, True),
    "llama-v3": (_LLAMA3_SPLIT, False, False, True),
    "dbrx": (_LLAMA3_SPLIT, False, False, True),
    "smaug-bpe": (_LLAMA3_SPLIT, False, False, True),
    "qwen2": (_QWEN2_SPLIT, False, True, False),
    "deepseek-r1-qwen": (_QWEN2_SPLIT, False, True, False),
    "stablelm2": (_QWEN2_SPLIT, False, True, False),
}


# GGUF metadata value types (llama.cpp's gguf.h): struct formats of the scalars; 8 = string, 9 = array.
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_NUMPY = {
    0: "<u1",
    1: "<i1",
    2: "<u2",
    3: "<i2",
    4: "<u4",
    5: "<i4",
    6: "<f4",
    7: "<?",
    10: "<u8",
    11: "<i8",
    12: "<f8",
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True, slots=True)
class _TensorInfo:
    name: str
    dims: tuple[int, ...]  # GGUF order: the fastest-varying dimension first
    kind: int  # GGMLQuantizationType value
    offset: int  # from the start of the data section


class _Parser:
    """Reads the header of a GGUF file (v2/v3, little-endian): metadata and tensor infos.

    Written here rather than using gguf.GGUFReader, which builds numpy views for every string of the
    vocabulary and takes seconds for a tokenizer of 50k tokens; this takes a fraction of one.
    """

    def __init__(self, data: Any) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        size = self.take("<Q")
        text = bytes(self.data[self.at : self.at + size]).decode("utf-8")
        self.at += size
        return text

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            if item in _NUMPY:
                import numpy as np

                array = np.frombuffer(self.data, dtype=_NUMPY[item], count=count, offset=self.at)
                self.at += array.nbytes
                return array.tolist()
            return [self.value(item) for _ in range(count)]
        if kind not in _SCALARS:
            raise ValueError(f"unknown metadata value type {kind}")
        return self.take(_SCALARS[kind])


class GgufFile:
    """One GGUF file: the header is parsed at once, tensors are read (memory-mapped) when asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with self.path.open("rb") as file:
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
            self.metadata, self._tensors, self._data_start = self._parse()
        except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
            raise CheckpointError(f"cannot read GGUF file {self.path}: {exc}") from exc
        self.architecture = str(self.get("general.architecture", ""))
        if self.architecture not in _ARCHITECTURES:
            raise CheckpointError(
                f"{self.path.name}: architecture {self.architecture!r} is not supported "
                f"(supported: {', '.join(_ARCHITECTURES)})"
            )

    def _parse(self) -> tuple[dict[str, Any], list[_TensorInfo], int]:
        parser = _Parser(self._map)
        if bytes(self._map[:4]) != b"GGUF":
            raise ValueError("not a GGUF file (bad magic)")
        parser.at = 4
        version = parser.take("<I")
        if version not in (2, 3):
            raise ValueError(
                f"GGUF version {version} is not supported (2 and 3 are; big-endian files are not)"
            )
        tensor_count, kv_count = parser.take("<Q"), parser.take("<Q")
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = parser.string()
            metadata[key] = parser.value(parser.take("<I"))
        tensors = []
        for _ in range(tensor_count):
            name = parser.string()
            dims = tuple(parser.take("<Q") for _ in range(parser.take("<I")))
            tensors.append(
                _TensorInfo(name=name, dims=dims, kind=parser.take("<I"), offset=parser.take("<Q"))
            )
        alignment = int(metadata.get("general.alignment", 32))
        return metadata, tensors, -(-parser.at // alignment) * alignment

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value by its GGUF key (`llama.block_count`, `tokenizer.chat_template`...)."""
        return self.metadata.get(key, default)

    def _arch(self, key: str, default: Any = None) -> Any:
        return self.get(f"{self.architecture}.{key}", default)

    def _require(self, key: str) -> Any:
        value = self._arch(key)
        if value is None:
            raise CheckpointError(f"{self.path.name} lacks the metadata {self.architecture}.{key}")
        return value

    # ------------------------------------------------------------------------------------ the model
    @cached_property
    def tensor_names(self) -> frozenset[str]:
        return frozenset(t.name for t in self._tensors)

    def hf_config(self) -> dict[str, Any]:
        """The Hugging Face `config.json` of this model (what ModelConfig.from_hf_config reads)."""
        if "rope_freqs.weight" in self.tensor_names or self._arch("rope.scaling.type", "none") != "none":
            raise CheckpointError(
                f"{self.path.name} uses rotary scaling, which this engine does not implement"
            )
        hidden = int(self._require("embedding_length"))
        heads = int(self._require("attention.head_count"))
        head_dim = int(self._arch("attention.key_length", hidden // heads))
        rotary = int(self._arch("rope.dimension_count", head_dim))
        if rotary != head_dim:
            raise CheckpointError(
                f"{self.path.name}: partial rotary ({rotary} of {head_dim}) is not supported"
            )
        return {
            "model_type": "llama",
            "hidden_size": hidden,
            "intermediate_size": int(self._require("feed_forward_length")),
            "num_hidden_layers": int(self._require("block_count")),
            "num_attention_heads": heads,
            "num_key_value_heads": int(self._arch("attention.head_count_kv", heads)),
            "head_dim": head_dim,
            "vocab_size": len(self.tokens),
            "rms_norm_eps": float(self._arch("attention.layer_norm_rms_epsilon", 1e-5)),
            "rope_theta": float(self._arch("rope.freq_base", 10_000.0)),
            "max_position_embeddings": int(self._arch("context_length", 8192)),
            "tie_word_embeddings": "output.weight" not in self.tensor_names,
            "hidden_act": "silu",
        }

    def tensors(self) -> Iterator[tuple[str, Any]]:
        """(Hugging Face name, float32 numpy array) for every weight, dequantized, Q/K un-permuted."""
        config = self.hf_config()
        for tensor in self._tensors:
            name = self._hf_name(tensor.name)
            array = self._dequantize(tensor)
            if name.endswith("q_proj.weight"):
                array = _unpermute(array, config["num_attention_heads"])
            elif name.endswith("k_proj.weight"):
                array = _unpermute(array, config["num_key_value_heads"])
            yield name, array

    def _dequantize(self, tensor: _TensorInfo) -> Any:
        import numpy as np

        try:
            from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
            from gguf.quants import dequantize
        except ImportError as exc:  # the torch extra installs it
            raise CheckpointError("reading a GGUF file needs the `gguf` package (pip install gguf)") from exc
        try:
            kind = GGMLQuantizationType(tensor.kind)
        except ValueError:
            raise CheckpointError(f"{self.path.name}: {tensor.name} has unknown type {tensor.kind}") from None
        shape = tuple(reversed(tensor.dims))  # numpy order: rows, then columns
        block, size = GGML_QUANT_SIZES[kind]
        count = math.prod(shape)
        start = self._data_start + tensor.offset
        if kind in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            dtype = np.float32 if kind == GGMLQuantizationType.F32 else np.float16
            raw = np.frombuffer(self._map, dtype=dtype, count=count, offset=start).reshape(shape)
        else:
            row = shape[-1] // block * size
            raw = np.frombuffer(self._map, dtype=np.uint8, count=count // block * size, offset=start)
            raw = raw.reshape((*shape[:-1], row))
        try:
            array = dequantize(raw, kind)
        except NotImplementedError as exc:
            raise CheckpointError(
                f"{self.path.name}: gguf cannot dequantize {tensor.name} ({kind.name})"
            ) from exc
        return np.array(array, dtype=np.float32).reshape(shape)  # a writable float32 copy

    def _hf_name(self, name: str) -> str:
        match = _LAYER_TENSOR.fullmatch(name)
        if match is not None and match.group(2) in _LAYER_NAMES:
            return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.weight"
        base = name.removesuffix(".weight")
        if name.endswith(".weight") and base in _TOP_NAMES:
            return f"{_TOP_NAMES[base]}.weight"
        raise CheckpointError(f"{self.path.name}: tensor {name!r} is not part of a Llama model")

    # -------------------------------------------------------------------------------- the tokenizer
    @cached_property
    def tokens(self) -> list[str]:
        tokens = self.get("tokenizer.ggml.tokens")
        if not tokens:
            raise CheckpointError(f"{self.path.name} has no tokenizer (tokenizer.ggml.tokens)")
        return list(tokens)

    @cached_property
    def token_types(self) -> list[int]:
        types = self.get("tokenizer.ggml.token_type")
        return list(types) if types else [TokenType.NORMAL] * len(self.tokens)

    def token_id(self, key: str) -> int | None:
        """A special token id from `tokenizer.ggml.<key>_token_id` (bos, eos, eot, eom...), or None."""
        value = self.get(f"tokenizer.ggml.{key}_token_id")
        return int(value) if value is not None and 0 <= int(value) < len(self.tokens) else None

    @property
    def chat_template(self) -> str:
        return str(self.get("tokenizer.chat_template", "") or "")

    def special_tokens(self) -> dict[str, Any]:
        """`bos`/`eos` ids from the metadata, and `eos_ids`: its end-of-turn and end-of-message ids."""
        tokens: dict[str, Any] = {}
        for name in ("bos", "eos"):
            token = self.token_id(name)
            if token is not None:
                tokens[name] = token
        tokens["eos_ids"] = [i for i in (self.token_id("eot"), self.token_id("eom")) if i is not None]
        return tokens

    def model_name(self) -> str:
        """The file name without its quantization suffix (SmolLM2-135M-Instruct.Q4_1.gguf ->
        SmolLM2-135M-Instruct); general.name is often a training-run label, so the file name wins."""
        return _QUANT_SUFFIX.sub("", self.path.stem) or str(self.get("general.name", self.path.stem))

    def has_tokenizer(self) -> bool:
        return bool(self.tokens)

    def tokenizer_json(self) -> str:
        """A Hugging Face tokenizer.json equivalent to the file's tokenizer."""
        model = self.get("tokenizer.ggml.model", "")
        pre = str(self.get("tokenizer.ggml.pre", "gpt2") or "gpt2")
        if model == "gpt2" and pre in _BYTE_LEVEL_SPLITS:
            return self._byte_level_tokenizer(pre)
        return self._transformers_tokenizer()

    def _byte_level_tokenizer(self, pre: str) -> str:
        try:
            from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
            from tokenizers import pre_tokenizers as pt
        except ImportError as exc:
            raise CheckpointError("a GGUF tokenizer needs the `tokenizers` package") from exc
        split, digits, nfc, ignore_merges = _BYTE_LEVEL_SPLITS[pre]
        alphabet = set(pt.ByteLevel.alphabet())
        spelling = _byte_spelling()
        vocab: dict[str, int] = {}
        for index, (token, kind) in enumerate(zip(self.tokens, self.token_types, strict=True)):
            if kind == TokenType.NORMAL and not set(token) <= alphabet:
                token = "".join(spelling[b] for b in token.encode("utf-8"))
            vocab.setdefault(token, index)
        merges = [tuple(m.split(" ", 1)) for m in self.get("tokenizer.ggml.merges", [])]
        tokenizer = Tokenizer(
            models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges, fuse_unk=False)
        )
        steps: list[Any] = []
        if digits:
            steps.append(pt.Digits(individual_digits=True))
        if split is not None:
            steps.append(pt.Split(Regex(split), behavior="isolated"))
        steps.append(pt.ByteLevel(add_prefix_space=False, use_regex=split is None))
        tokenizer.pre_tokenizer = pt.Sequence(steps)
        if nfc:
            tokenizer.normalizer = normalizers.NFC()
        tokenizer.decoder = decoders.ByteLevel()
        added = [
            AddedToken(token, special=kind == TokenType.CONTROL, normalized=False)
            for token, kind in zip(self.tokens, self.token_types, strict=True)
            if kind in (TokenType.CONTROL, TokenType.USER_DEFINED)
        ]
        tokenizer.add_special_tokens([t for t in added if t.special])
        tokenizer.add_tokens([t for t in added if not t.special])
        if tokenizer.get_vocab_size(with_added_tokens=True) != len(self.tokens):
            raise CheckpointError(f"{self.path.name}: the tokenizer does not match its vocabulary")
        return str(tokenizer.to_str())

    def _transformers_tokenizer(self) -> str:
        # Sentencepiece vocabularies and pre-tokenizers not listed above: transformers' GGUF converter.
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise CheckpointError(
                f"{self.path.name}: its tokenizer ({self.get('tokenizer.ggml.model')!r}, pre-tokenizer "
                f"{self.get('tokenizer.ggml.pre')!r}) is converted by `transformers`, which is not installed"
            ) from exc
        loaded = AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name)
        return str(loaded.backend_tokenizer.to_str())


def _unpermute(weight: Any, heads: int) -> Any:
    """Undo llama.cpp's Q/K row permutation: per head, rows (pair, half) -> (half, pair)."""
    rows, cols = weight.shape
    return weight.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _byte_spelling() -> dict[int, str]:
    """GPT-2's byte-to-character table (how a byte-level vocabulary spells raw bytes)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table

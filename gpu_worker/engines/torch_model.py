"""A Llama-architecture decoder-only transformer that prefills and decodes on top of a per-chain KV cache.

Architecture (the Hugging Face `LlamaForCausalLM` layout, so a local checkpoint of that architecture
loads by name; see docs/torch_engine.md): token embedding → N × [RMSNorm → attention with rotary position
embeddings (rotate-half convention) and optional grouped-query heads → residual → RMSNorm → SwiGLU MLP →
residual] → RMSNorm → LM head (or the tied embedding). No biases.

`Transformer.forward(chunks)` takes any number of sequences, each feeding `n >= 1` new tokens on top of
the keys and values already in its own KV tensor. All tokens of all sequences go through the linear
layers as one flat batch (the matmuls are batched); attention runs per sequence over its own cache, so
sequences of different lengths need no padding. It returns the logits of each chunk's last token.

Weights are dummy (normal(0, 0.02) from a fixed seed, Tether's o200k vocabulary) unless a checkpoint is
given: a Hugging Face directory or a GGUF file (gpu_worker/engines/checkpoint.py). Dummy weights produce
meaningless text; the compute, and so the timing, is real.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from gpu_worker.engines.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from gpu_worker.wire.tokenizer import VOCAB_SIZE

__all__ = [
    "PRESETS",
    "CheckpointError",
    "Chunk",
    "ModelConfig",
    "Transformer",
    "dummy_model",
    "load_checkpoint",
    "load_model",
    "preset",
    "require_tether_vocabulary",
]

INIT_STD = 0.02


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Shape of the transformer (the subset of a Hugging Face Llama config.json that matters)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int = VOCAB_SIZE
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500_000.0
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        dims = (self.hidden_size, self.intermediate_size, self.num_layers, self.num_heads, self.head_dim)
        if min(dims) < 1 or self.num_kv_heads < 1:
            raise ValueError(f"model dimensions must be positive: {self}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of kv heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {self.vocab_size}")

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        """Bytes of keys and values one token occupies in the cache, all layers."""
        elem = torch.empty((), dtype=dtype).element_size()
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * elem

    def parameter_count(self) -> int:
        """Number of weights (embedding counted once when tied)."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        attn = d * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
        layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_word_embeddings else v * d
        return v * d + self.num_layers * layer + d + head

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any]) -> ModelConfig:
        """Build from a Hugging Face Llama config.json; refuses what this model does not implement."""
        model_type = cfg.get("model_type")
        if model_type != "llama":
            raise CheckpointError(f"model_type must be 'llama', got {model_type!r}")
        for unsupported in ("rope_scaling", "attention_bias", "mlp_bias"):
            if cfg.get(unsupported):
                raise CheckpointError(f"config.json sets {unsupported}, which this engine does not implement")
        if cfg.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"hidden_act must be 'silu', got {cfg.get('hidden_act')!r}")
        try:
            heads = int(cfg["num_attention_heads"])
            hidden = int(cfg["hidden_size"])
            return cls(
                hidden_size=hidden,
                intermediate_size=int(cfg["intermediate_size"]),
                num_layers=int(cfg["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or hidden // heads),
                vocab_size=int(cfg["vocab_size"]),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
                rope_theta=float(cfg.get("rope_theta", 10_000.0)),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 8192)),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            )
        except KeyError as exc:
            raise CheckpointError(f"config.json lacks {exc.args[0]!r}") from exc
        except ValueError as exc:
            raise CheckpointError(f"config.json: {exc}") from exc

    def to_hf_config(self) -> dict[str, Any]:
        """The config.json of this shape (what `from_hf_config` reads back)."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
        }


# Dummy-weight sizes. "1b" has the shape of a 1B-parameter Llama 3.2 (with Tether's vocabulary).
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        hidden_size=64, intermediate_size=172, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16
    ),
    "small": ModelConfig(
        hidden_size=256, intermediate_size=688, num_layers=4, num_heads=8, num_kv_heads=4, head_dim=32
    ),
    "medium": ModelConfig(
        hidden_size=768, intermediate_size=2048, num_layers=12, num_heads=12, num_kv_heads=4, head_dim=64
    ),
    "1b": ModelConfig(
        hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named dummy-weight shape, optionally with some fields replaced."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}") from None
    return replace(base, **overrides) if overrides else base


@dataclass(frozen=True, slots=True)
class Chunk:
    """New tokens of one sequence: they occupy positions start .. start+len(tokens)-1 of `kv`.

    `kv` is [layers, 2, kv_heads, capacity, head_dim] with capacity >= start + len(tokens); its positions
    below `start` hold the keys and values of the tokens before these, and forward() writes the new ones.
    """

    tokens: torch.Tensor
    start: int
    kv: torch.Tensor


class _RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 as the reference implementation does; low-precision variance drifts.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class _Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.q_proj = nn.Linear(d, cfg.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * hd, d, bias=False)


class _Mlp(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return out


class _Layer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = _RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = _Attention(cfg)
        self.post_attention_layernorm = _RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = _Mlp(cfg)


class _Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_layers))
        self.norm = _RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Transformer(nn.Module):
    """The model; parameter names equal the Hugging Face Llama names (model.layers.0.self_attn.q_proj...)."""

    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = _Backbone(cfg)
        self.lm_head = (
            None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        )
        cos, sin = _rope_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.model.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.norm.weight.dtype

    def new_kv(self, capacity: int) -> torch.Tensor:
        """An empty KV tensor for `capacity` tokens."""
        c = self.cfg
        shape = (c.num_layers, 2, c.num_kv_heads, capacity, c.head_dim)
        return torch.empty(shape, dtype=self.dtype, device=self.device)

    @torch.inference_mode()
    def forward(self, chunks: Sequence[Chunk]) -> torch.Tensor:
        """Extend each chunk's KV with its tokens; the float32 logits of each chunk's last token [B, V]."""
        lengths = [int(c.tokens.shape[0]) for c in chunks]
        for c, n in zip(chunks, lengths, strict=True):
            if n < 1 or c.start + n > min(int(c.kv.shape[3]), self.cfg.max_position_embeddings):
                raise ValueError(f"chunk of {n} tokens at {c.start} does not fit its KV ({c.kv.shape[3]})")
        x = self.model.embed_tokens(torch.cat([c.tokens for c in chunks]))
        positions = torch.cat(
            [torch.arange(c.start, c.start + n) for c, n in zip(chunks, lengths, strict=True)]
        )
        positions = positions.to(self.device)
        cos = self.rope_cos[positions].to(x.dtype).unsqueeze(1)
        sin = self.rope_sin[positions].to(x.dtype).unsqueeze(1)
        masks = [_causal_mask(c.start, n, self.device) for c, n in zip(chunks, lengths, strict=True)]
        for index, layer in enumerate(cast(list[_Layer], self.model.layers)):
            attn_in = layer.input_layernorm(x)
            x = x + self._attention(index, layer.self_attn, attn_in, chunks, lengths, masks, cos, sin)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        ends = torch.tensor(lengths, device=self.device).cumsum(0) - 1
        last = self.model.norm(x[ends])
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(last, weight).float()

    def _attention(
        self,
        index: int,
        attn: _Attention,
        h: torch.Tensor,
        chunks: Sequence[Chunk],
        lengths: Sequence[int],
        masks: Sequence[torch.Tensor | None],
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        c = self.cfg
        total = h.shape[0]
        q = attn.q_proj(h).view(total, c.num_heads, c.head_dim)
        k = attn.k_proj(h).view(total, c.num_kv_heads, c.head_dim)
        v = attn.v_proj(h).view(total, c.num_kv_heads, c.head_dim)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        group = c.num_heads // c.num_kv_heads
        outs = []
        offset = 0
        for chunk, n, mask in zip(chunks, lengths, masks, strict=True):
            end = chunk.start + n
            span = slice(offset, offset + n)
            chunk.kv[index, 0, :, chunk.start : end] = k[span].transpose(0, 1)
            chunk.kv[index, 1, :, chunk.start : end] = v[span].transpose(0, 1)
            # Query heads that share a KV head become extra query rows of that head (GQA without copies):
            # [heads, n, d] -> [kv_heads, group * n, d], rows ordered (group, position).
            qs = q[span].transpose(0, 1).reshape(c.num_kv_heads, group * n, c.head_dim)
            keys, values = chunk.kv[index, 0, :, :end], chunk.kv[index, 1, :, :end]
            rows_mask = None if mask is None else mask.repeat(group, 1)
            o = F.scaled_dot_product_attention(qs, keys, values, attn_mask=rows_mask)
            outs.append(o.reshape(c.num_heads, n, c.head_dim).transpose(0, 1).reshape(n, -1))
            offset += n
        out: torch.Tensor = attn.o_proj(torch.cat(outs))
        return out


def _causal_mask(start: int, n: int, device: torch.device) -> torch.Tensor | None:
    """[n, start + n] bool, True where query i (at position start + i) may attend; None for one token."""
    if n == 1:
        return None
    keys = torch.arange(start + n, device=device)
    queries = torch.arange(start, start + n, device=device)
    return keys.unsqueeze(0) <= queries.unsqueeze(1)


def _rope_tables(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, [max_position_embeddings, head_dim], float32 on the CPU."""
    exponents = torch.arange(0, cfg.head_dim, 2, dtype=torch.float32, device="cpu") / cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta**exponents)
    angles = torch.outer(
        torch.arange(cfg.max_position_embeddings, dtype=torch.float32, device="cpu"), inv_freq
    )
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def _empty_model(cfg: ModelConfig) -> Transformer:
    """The model with uninitialised weights on the CPU (no time spent on a default init)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    model = model.to_empty(device="cpu")
    cos, sin = _rope_tables(cfg)  # to_empty left the (non-persistent) rotary buffers uninitialised
    model.rope_cos.copy_(cos)
    model.rope_sin.copy_(sin)
    return model


def dummy_model(cfg: ModelConfig, *, seed: int, device: torch.device, dtype: torch.dtype) -> Transformer:
    """A model with dummy weights drawn from `seed` (on the CPU, so every device gets the same weights)."""
    model = _empty_model(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, INIT_STD, generator=gen)
    return model.to(device=device, dtype=dtype).eval()


def require_tether_vocabulary(cfg: ModelConfig) -> None:
    """Refuse a model fed Tether's o200k ids (dummy weights, a checkpoint without its own tokenizer)
    whose embedding has fewer rows than those ids reach."""
    if cfg.vocab_size < VOCAB_SIZE:
        raise CheckpointError(
            f"vocab_size {cfg.vocab_size} < Tether's VOCAB_SIZE {VOCAB_SIZE}: a checkpoint without its own "
            "tokenizer.json must be trained on Tether's o200k vocabulary"
        )


def load_checkpoint(path: str | Path, *, device: torch.device, dtype: torch.dtype) -> Transformer:
    """Load a local Llama-architecture checkpoint (never a download): a Hugging Face directory
    (config.json + *.safetensors) or a GGUF file (dequantized to float32, then cast to `dtype`)."""
    return load_model(open_checkpoint(path), device=device, dtype=dtype)


def load_model(checkpoint: Checkpoint, *, device: torch.device, dtype: torch.dtype) -> Transformer:
    """The model of an opened checkpoint (see `load_checkpoint`)."""
    cfg = ModelConfig.from_hf_config(checkpoint.hf_config())
    if not checkpoint.has_tokenizer():
        require_tether_vocabulary(cfg)
    state: dict[str, torch.Tensor] = {}
    for name, value in checkpoint.tensors():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        state[name] = value if isinstance(value, torch.Tensor) else torch.from_numpy(value)
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    model = _empty_model(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint.path}: tensors do not match the config: {exc}") from exc
    return model.to(device=device, dtype=dtype).eval()

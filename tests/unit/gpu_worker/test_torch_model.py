"""The torch engine's transformer: KV reuse equals a full recompute, batching changes nothing, and the
Llama layout (names, rotary convention, grouped-query heads) matches a naive reference implementation."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the torch extra is not installed (pip install '.[torch]')")

from gpu_worker.engines.torch_model import (  # noqa: E402
    CheckpointError,
    Chunk,
    ModelConfig,
    Transformer,
    dummy_model,
    load_checkpoint,
    preset,
)
from gpu_worker.wire.tokenizer import VOCAB_SIZE  # noqa: E402

CPU = torch.device("cpu")
ATOL = 1e-4


@pytest.fixture(scope="module")
def model() -> Transformer:
    return dummy_model(preset("tiny"), seed=7, device=CPU, dtype=torch.float32)


def _prompt(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB_SIZE, (n,), generator=torch.Generator().manual_seed(seed))


def _full(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    return model([Chunk(tokens=tokens, start=0, kv=model.new_kv(len(tokens)))])[0]


@pytest.mark.parametrize("cuts", [[1], [17], [5, 6, 30], [39]])
def test_logits_after_kv_reuse_equal_a_full_recompute(model: Transformer, cuts: list[int]) -> None:
    tokens = _prompt(40)
    kv = model.new_kv(64)
    bounds = [0, *cuts, len(tokens)]
    for start, end in pairwise(bounds):
        logits = model([Chunk(tokens=tokens[start:end], start=start, kv=kv)])[0]
    torch.testing.assert_close(logits, _full(model, tokens), atol=ATOL, rtol=0)


def test_one_token_at_a_time_equals_a_full_recompute(model: Transformer) -> None:
    tokens = _prompt(12, seed=1)
    kv = model.new_kv(16)
    for i in range(len(tokens)):
        logits = model([Chunk(tokens=tokens[i : i + 1], start=i, kv=kv)])[0]
    torch.testing.assert_close(logits, _full(model, tokens), atol=ATOL, rtol=0)


def test_a_batch_of_sequences_equals_each_alone(model: Transformer) -> None:
    a, b, c = _prompt(30, seed=2), _prompt(9, seed=3), _prompt(1, seed=4)
    kv_a = model.new_kv(32)
    model([Chunk(tokens=a[:29], start=0, kv=kv_a)])
    batch = model(
        [
            Chunk(tokens=a[29:], start=29, kv=kv_a),  # decoding on a cache
            Chunk(tokens=b, start=0, kv=model.new_kv(9)),  # a prefill
            Chunk(tokens=c, start=0, kv=model.new_kv(1)),
        ]
    )
    for row, tokens in enumerate((a, b, c)):
        torch.testing.assert_close(batch[row], _full(model, tokens), atol=ATOL, rtol=0)


def test_positions_before_start_are_never_written(model: Transformer) -> None:
    tokens = _prompt(10, seed=5)
    kv = model.new_kv(16)
    model([Chunk(tokens=tokens[:6], start=0, kv=kv)])
    before = kv[:, :, :, :6].clone()
    model([Chunk(tokens=tokens[6:], start=6, kv=kv)])
    assert torch.equal(kv[:, :, :, :6], before)


def test_a_chunk_that_overflows_its_kv_is_refused(model: Transformer) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        model([Chunk(tokens=_prompt(5), start=0, kv=model.new_kv(4))])


def _reference_logits(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """The Hugging Face Llama forward pass written out naively (repeat_kv, rotate_half, causal mask)."""
    cfg = model.cfg
    sd = model.state_dict()
    n = len(tokens)

    def norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps))

    def rope(x: torch.Tensor) -> torch.Tensor:  # x: [heads, n, d]
        inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim))
        freqs = torch.outer(torch.arange(n).float(), inv)
        emb = torch.cat((freqs, freqs), -1)
        half = cfg.head_dim // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), -1)
        return x * emb.cos() + rotated * emb.sin()

    x = sd["model.embed_tokens.weight"][tokens]
    group = cfg.num_heads // cfg.num_kv_heads
    causal = torch.ones(n, n).tril().bool()
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        h = norm(x, sd[p + "input_layernorm.weight"])
        q = (h @ sd[p + "self_attn.q_proj.weight"].T).view(n, cfg.num_heads, -1).transpose(0, 1)
        k = (h @ sd[p + "self_attn.k_proj.weight"].T).view(n, cfg.num_kv_heads, -1).transpose(0, 1)
        v = (h @ sd[p + "self_attn.v_proj.weight"].T).view(n, cfg.num_kv_heads, -1).transpose(0, 1)
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
        scores = (q @ k.transpose(1, 2)) / cfg.head_dim**0.5
        att = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v
        x = x + att.transpose(0, 1).reshape(n, -1) @ sd[p + "self_attn.o_proj.weight"].T
        h = norm(x, sd[p + "post_attention_layernorm.weight"])
        gate = torch.nn.functional.silu(h @ sd[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ sd[p + "mlp.up_proj.weight"].T)) @ sd[p + "mlp.down_proj.weight"].T
    head = sd.get("lm_head.weight", sd["model.embed_tokens.weight"])
    return (norm(x[-1], sd["model.norm.weight"]) @ head.T).float()


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_the_model_matches_a_naive_llama_reference(kv_heads: int) -> None:
    cfg = preset("tiny", num_kv_heads=kv_heads, tie_word_embeddings=False)
    model = dummy_model(cfg, seed=11, device=CPU, dtype=torch.float32)
    # Dummy weights are tiny (std 0.02): scale them up so attention patterns are far from uniform.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "proj" in name:
                param.mul_(20)
    tokens = _prompt(23, seed=6)
    torch.testing.assert_close(_full(model, tokens), _reference_logits(model, tokens), atol=1e-3, rtol=1e-4)


def test_dummy_weights_are_fixed_by_the_seed() -> None:
    cfg = preset("tiny", num_layers=1)
    a, b = (dummy_model(cfg, seed=3, device=CPU, dtype=torch.float32) for _ in range(2))
    c = dummy_model(cfg, seed=4, device=CPU, dtype=torch.float32)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_kv_size_per_token() -> None:
    cfg = preset("tiny")  # 2 layers x (K, V) x 2 kv heads x 16 dims
    assert cfg.kv_bytes_per_token(torch.float32) == 2 * 2 * 2 * 16 * 4
    assert preset("1b").kv_bytes_per_token(torch.bfloat16) == 16 * 2 * 8 * 64 * 2


# ------------------------------------------------------------------------------------------ checkpoints
SMALL = ModelConfig(
    hidden_size=16, intermediate_size=24, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=4
)


def _write_checkpoint(path: Path, cfg: ModelConfig, **config_overrides: object) -> Transformer:
    from safetensors.torch import save_file

    model = dummy_model(cfg, seed=21, device=CPU, dtype=torch.float32)
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps({**cfg.to_hf_config(), **config_overrides}))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    half = len(state) // 2  # sharded, as large checkpoints are
    names = sorted(state)
    save_file({k: state[k] for k in names[:half]}, str(path / "model-00001-of-00002.safetensors"))
    save_file({k: state[k] for k in names[half:]}, str(path / "model-00002-of-00002.safetensors"))
    return model


@pytest.mark.parametrize("tied", [True, False])
def test_a_local_safetensors_checkpoint_loads_by_llama_names(tmp_path: Path, tied: bool) -> None:
    pytest.importorskip("safetensors", reason="the torch extra installs safetensors")
    cfg = replace(SMALL, tie_word_embeddings=tied)
    written = _write_checkpoint(tmp_path, cfg)
    loaded = load_checkpoint(tmp_path, device=CPU, dtype=torch.float32)
    assert loaded.cfg == cfg
    assert ("lm_head.weight" in dict(loaded.named_parameters())) is not tied
    tokens = _prompt(8, seed=9)
    torch.testing.assert_close(_full(loaded, tokens), _full(written, tokens), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model_type": "gpt2"}, "model_type"),
        ({"rope_scaling": {"rope_type": "llama3"}}, "rope_scaling"),
        ({"vocab_size": 32000}, "vocab_size"),
        ({"num_hidden_layers": 3}, "do not match"),
        ({"hidden_act": "gelu"}, "hidden_act"),
    ],
)
def test_a_checkpoint_of_another_shape_is_refused_clearly(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    pytest.importorskip("safetensors", reason="the torch extra installs safetensors")
    _write_checkpoint(tmp_path, SMALL, **overrides)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path, device=CPU, dtype=torch.float32)


def test_a_directory_without_a_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_checkpoint(tmp_path, device=CPU, dtype=torch.float32)
    (tmp_path / "config.json").write_text(json.dumps(SMALL.to_hf_config()))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(tmp_path, device=CPU, dtype=torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (runs wherever one exists)")
def test_on_cuda_in_bfloat16_kv_reuse_matches_a_full_recompute() -> None:
    cuda = torch.device("cuda")
    model = dummy_model(preset("tiny"), seed=7, device=cuda, dtype=torch.bfloat16)
    tokens = _prompt(300).to(cuda)
    kv = model.new_kv(320)
    model([Chunk(tokens=tokens[:200], start=0, kv=kv)])
    model([Chunk(tokens=tokens[200:299], start=200, kv=kv)])
    logits = model([Chunk(tokens=tokens[299:], start=299, kv=kv)])[0]
    full = model([Chunk(tokens=tokens, start=0, kv=model.new_kv(300))])[0]
    assert logits.device.type == "cuda"
    torch.testing.assert_close(logits, full, atol=5e-2, rtol=5e-2)  # bfloat16 accumulates differently
    cpu = dummy_model(preset("tiny"), seed=7, device=CPU, dtype=torch.float32)
    torch.testing.assert_close(full.cpu(), _full(cpu, tokens.cpu()), atol=5e-2, rtol=5e-2)

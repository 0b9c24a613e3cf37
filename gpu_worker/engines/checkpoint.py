"""Where a real model comes from: a Hugging Face directory or a GGUF file (no torch here).

`open_checkpoint(path)` returns a `Checkpoint`: its Hugging Face `config.json` (as a dict), its
tokenizer (a `tokenizer.json` text, or None for a checkpoint trained on Tether's own o200k vocabulary),
its chat template and the special token ids its files name. The torch engine loads the weights from it
(gpu_worker/engines/torch_model.py) and the worker describes the model from it
(gpu_worker/engines/describe.py).

A Hugging Face directory holds `config.json`, `*.safetensors`, and for a real model `tokenizer.json` and
`tokenizer_config.json` (whose `chat_template`, or a `chat_template.jinja` file, is the chat template);
`generation_config.json` may add end-of-sequence ids. A GGUF file holds all of it (gguf_file.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Checkpoint", "CheckpointError", "HfDirectory", "open_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed, or not of the supported architecture."""


class Checkpoint(Protocol):
    """What the engine reads from a checkpoint, whatever its format."""

    path: Path

    def hf_config(self) -> dict[str, Any]:
        """The Hugging Face config.json of the model."""
        ...

    def tensors(self) -> Iterator[tuple[str, Any]]:
        """(Hugging Face Llama name, tensor or array) for every weight."""
        ...

    def has_tokenizer(self) -> bool:
        """Whether the checkpoint brings its own tokenizer (else it uses Tether's o200k vocabulary)."""
        ...

    def tokenizer_json(self) -> str | None:
        """A Hugging Face tokenizer.json; None: the checkpoint uses Tether's o200k vocabulary."""
        ...

    @property
    def chat_template(self) -> str: ...

    def special_tokens(self) -> dict[str, Any]:
        """`bos`/`eos` as ids (int) or token texts (str), and `eos_ids` (a list of ids), where known."""
        ...

    def model_name(self) -> str:
        """The model's name (the directory or file name)."""
        ...


def open_checkpoint(path: str | Path) -> Checkpoint:
    """A Hugging Face directory or a `.gguf` file; CheckpointError when it is neither."""
    root = Path(path).expanduser()
    if root.is_file() and root.suffix.lower() == ".gguf":
        from gpu_worker.engines.gguf_file import GgufFile

        return GgufFile(root)
    if root.is_dir():
        return HfDirectory(root)
    if root.exists():
        raise CheckpointError(f"{root} is neither a checkpoint directory nor a .gguf file")
    raise CheckpointError(f"no checkpoint at {root}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


class HfDirectory:
    """A local Hugging Face checkpoint directory (never a download)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def hf_config(self) -> dict[str, Any]:
        config = _read_json(self.path / "config.json")
        if not isinstance(config, dict):
            raise CheckpointError(f"{self.path / 'config.json'} is not a JSON object")
        return config

    def tensors(self) -> Iterator[tuple[str, Any]]:
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"no *.safetensors files in {self.path}")
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # the torch extra installs it
            raise CheckpointError("loading a checkpoint needs the `safetensors` package") from exc
        for file in files:
            yield from load_file(str(file)).items()

    def has_tokenizer(self) -> bool:
        return (self.path / "tokenizer.json").is_file()

    def tokenizer_json(self) -> str | None:
        file = self.path / "tokenizer.json"
        if not file.is_file():
            return None
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"cannot read {file}: {exc}") from exc

    def _tokenizer_config(self) -> dict[str, Any]:
        file = self.path / "tokenizer_config.json"
        config = _read_json(file) if file.is_file() else {}
        return config if isinstance(config, dict) else {}

    @property
    def chat_template(self) -> str:
        template = self._tokenizer_config().get("chat_template")
        if isinstance(template, list):  # named templates: the default one
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        if isinstance(template, str) and template:
            return template
        jinja = self.path / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        legacy = self.path / "chat_template.json"
        if legacy.is_file():
            data = _read_json(legacy)
            if isinstance(data, dict) and isinstance(data.get("chat_template"), str):
                return str(data["chat_template"])
        return ""

    def special_tokens(self) -> dict[str, Any]:
        config = self._tokenizer_config()
        tokens: dict[str, Any] = {}
        for name in ("bos", "eos"):
            text = _token_text(config.get(f"{name}_token"))
            if text is not None:
                tokens[name] = text
        generation = self.path / "generation_config.json"
        if generation.is_file():
            data = _read_json(generation)
            eos = data.get("eos_token_id") if isinstance(data, dict) else None
            ids = eos if isinstance(eos, list) else [eos]
            tokens["eos_ids"] = [int(i) for i in ids if isinstance(i, int)]
        return tokens

    def model_name(self) -> str:
        return self.path.resolve().name

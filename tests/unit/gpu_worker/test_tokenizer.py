"""The one tokenizer: its bytes-per-token ratio on representative agent traffic (the README quotes the
figures that benchmarks/worker_bench.py prints for the same corpus)."""

from __future__ import annotations

import pytest
import worker_corpus

from gpu_worker.wire import tokenizer

# Wide bands: the corpus includes files of this repository, which change; the README has the figures.
_BANDS = {"prose": (3.5, 5.0), "code": (3.0, 5.5), "tool_json": (2.5, 4.5)}


def test_bytes_per_token_ratio() -> None:
    samples = worker_corpus.samples()
    assert set(samples) == set(_BANDS)
    total_bytes = total_tokens = 0
    for category, text in samples.items():
        size, tokens = len(text.encode()), tokenizer.count(text)
        assert size > 2_000, category  # a real sample, not an empty file
        low, high = _BANDS[category]
        assert low <= size / tokens <= high, (category, size / tokens)
        total_bytes, total_tokens = total_bytes + size, total_tokens + tokens
    assert 3.0 <= total_bytes / total_tokens <= 4.5


@pytest.mark.parametrize("text", ["", "a", "héllo wörld", '{"k": [1, 2.5, null]}', "\n\n\t  x"])
def test_counts_agree_with_encoding_and_round_trip(text: str) -> None:
    ids = tokenizer.encode(text)
    assert tokenizer.count(text) == len(ids)
    assert tokenizer.decode(ids) == text
    assert all(tokenizer.is_valid_id(i) for i in ids)

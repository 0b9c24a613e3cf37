"""Real-text tool outputs and histories (loadtest/corpus.py), and the workload runs that use them."""

from __future__ import annotations

import os
import re
import sysconfig
import zlib
from collections import Counter
from pathlib import Path

import pytest

from gpu_worker.wire.tokenizer import encode
from loadtest.corpus import BYTES_PER_TOKEN, Corpus, fit
from loadtest.workload import AgentRun, AgentShape, check_mode, tool_output

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TOOLS = ("grep", "read_file", "run_tests")


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.stdlib(seed=1)


def test_the_corpus_is_the_standard_library_and_its_documentation(corpus: Corpus) -> None:
    sources, topics = corpus.size
    assert sources > 500
    assert topics > 50
    with pytest.raises(ValueError, match="needs source files"):
        Corpus([], [("t", lambda: "x")])


@pytest.mark.parametrize("name", TOOLS)
@pytest.mark.parametrize("size", [1, 300, 4096, 70_000])
def test_outputs_are_exact_in_bytes_and_deterministic_per_seed_and_key(
    corpus: Corpus, name: str, size: int
) -> None:
    text = corpus.tool_output(name, "a0-r0/c1", size)
    assert len(text.encode()) == size
    assert text == Corpus.stdlib(seed=1).tool_output(name, "a0-r0/c1", size)  # another process: same
    if size >= 300:
        assert text != corpus.tool_output(name, "a0-r0/c2", size)
        assert text != Corpus.stdlib(seed=2).tool_output(name, "a0-r0/c1", size)


def test_grep_lines_are_real_lines_of_real_files_sharing_a_word(corpus: Corpus) -> None:
    lines = corpus.tool_output("grep", "k", 4096).splitlines()[:-1]  # the last one may be cut
    assert len(lines) > 10
    words: Counter[str] = Counter()
    for line in lines:
        path, number, text = line.split(":", 2)
        source = (STDLIB / path).read_text(encoding="utf-8", errors="replace")
        assert source.split("\n")[int(number) - 1] == text
        words.update(set(re.findall(r"[A-Za-z_][A-Za-z0-9_]{5,}", text)))
    assert words.most_common(1)[0][1] >= len(lines) // 2  # the pattern they matched


def test_read_file_is_a_run_of_lines_of_a_library_file(corpus: Corpus) -> None:
    text = corpus.tool_output("read_file", "k", 2000)
    head = text[:200]
    assert any(head in path.read_text(encoding="utf-8", errors="replace") for path in _candidates(head))


def test_run_tests_reports_the_real_tests_of_a_library_test_file(corpus: Corpus) -> None:
    text = corpus.tool_output("run_tests", "k", 4096)
    assert text.startswith("=" * 29 + " test session starts ")
    node = next(line for line in text.splitlines() if "::" in line)
    path, *_, test = node.split(" ")[0].split("::")
    assert f"def {test}(" in (STDLIB / path).read_text(encoding="utf-8", errors="replace")
    assert " FAILED " in text
    assert "= FAILURES =" in text


def test_history_is_about_the_requested_tokens_and_differs_by_key(corpus: Corpus) -> None:
    for tokens in (1_000, 30_000):
        count = len(encode(corpus.history("a0-r0", tokens)))
        assert 0.8 * tokens <= count <= 1.2 * tokens, (tokens, count)
    assert corpus.history("a0-r0", 500) != corpus.history("a1-r0", 500)
    assert corpus.history("x", 0) == ""


@pytest.mark.parametrize("name", TOOLS)
def test_real_text_compresses_far_less_than_generated_lines(corpus: Corpus, name: str) -> None:
    real = corpus.tool_output(name, "a0-r0/c1", 4096).encode()
    synthetic = tool_output("call_1", name, 4096).encode()
    real_ratio = len(zlib.compress(real, 6)) / len(real)
    assert real_ratio > 0.2
    assert real_ratio > 1.5 * len(zlib.compress(synthetic, 6)) / len(synthetic)
    assert 3.0 <= len(real) / len(encode(real.decode())) <= 1.5 * BYTES_PER_TOKEN  # tokenizes like text


def test_fit_never_cuts_a_character() -> None:
    assert fit("aé", 2) == "a\n"  # é is two bytes: dropped whole, padded
    assert fit("abc", 5) == "abc\n\n"
    assert fit("abc", 2) == "ab"


def test_a_corpus_of_given_documents_is_pure() -> None:
    sources = [
        ("pkg/test_mod.py", lambda: "class T(Base):\n    def test_one(self):\n        assert x\n" * 40)
    ]
    topics = [("pydoc:intro", lambda: "Some documentation text. " * 400)]
    small = Corpus(sources, topics, seed=3)
    for name in TOOLS:
        assert len(small.tool_output(name, "k", 1000).encode()) == 1000
    assert "pkg/test_mod.py::T::test_one" in small.tool_output("run_tests", "k", 1000)


def test_runs_with_the_corpus_send_the_same_texts_in_every_mode(corpus: Corpus) -> None:
    calls = {"id": "resp_1", "status": "completed", "usage": {}, "output": [
        {"type": "function_call", "call_id": "call_a", "name": "grep", "arguments": "{}"},
    ]}  # fmt: skip
    outputs = []
    for mode, run_id in (("ws", "ws-a0-r0-1"), ("http_full", "full-a0-r0-2")):
        shape = AgentShape(tool_calls=3, output_bytes=500, history_tokens=200)
        run = AgentRun(check_mode(mode), shape, run_id, texts=corpus, content_key="a0-r0")
        first = run.next_body()
        message = first["input"][0]["content"][0]["text"]
        assert message.startswith(f"Session {run_id}:\n")  # the run id leads: no shared cached prefix
        assert first["prompt_cache_key"] == run_id
        run.record(calls)
        outputs.append(run.next_body()["input"][-1]["output"])
        assert message.split("\n", 1)[1] == corpus.history("a0-r0", 200) + "\n\n" + message.split("\n\n")[-1]
    assert outputs[0] == outputs[1] == corpus.tool_output("grep", "a0-r0/c0", 500)


def _candidates(head: str) -> list[Path]:
    first = head.splitlines()[0] if head.strip() else head
    found = []
    for folder, dirs, names in os.walk(STDLIB):
        dirs[:] = [d for d in dirs if d not in ("site-packages", "__pycache__")]
        for name in names:
            path = Path(folder, name)
            if name.endswith(".py") and first in path.read_text(encoding="utf-8", errors="replace"):
                found.append(path)
    return found

"""Real text for the agent workload: the Python standard library's source files and its documentation
topics (`pydoc_data/topics.py`), which ship with every Python installation.

Generated lines compress far better than what tools really return, and they tokenize differently, so
the benchmark's compression and tokenization figures would mean little. A `Corpus` answers a tool call
with text cut from those files, shaped like the tool's output, and writes a long first message from the
documentation:

    corpus = Corpus.stdlib(seed=1)                    # lists the files; each is read when first used
    corpus.tool_output("grep", "a0-r1/c3", 4096)      # 4096 bytes: path:line:text lines that match a word
    corpus.tool_output("read_file", "a0-r1/c4", 4096) # a run of lines of one source file
    corpus.tool_output("run_tests", "a0-r1/c5", 4096) # a pytest report over one of the library's test files
    corpus.history("a0-r1", tokens=30_000)            # documentation topics, then sources, about that long

Deterministic: the same seed, key and Python installation give the same text (a random generator seeded
from blake2b(seed, key) picks files and places). Outputs are exactly the requested number of UTF-8 bytes.
`BYTES_PER_TOKEN` converts a token count into bytes of this text (o200k; tests/unit/loadtest checks it).
"""

from __future__ import annotations

import os
import random
import re
import sysconfig
from collections import OrderedDict
from collections.abc import Callable, Sequence
from hashlib import blake2b
from pathlib import Path
from typing import Final

__all__ = ["BYTES_PER_TOKEN", "Corpus"]

BYTES_PER_TOKEN: Final = 4.5  # o200k over the library's sources and documentation
_SKIP_DIRS: Final = frozenset({"site-packages", "dist-packages", "__pycache__", "idle_test"})
_CACHED_FILES: Final = 512  # texts held in memory at once (the library is about 30 MB)
_GREP_FILES: Final = 48  # files one grep reads before it tries another word
_GREP_WORDS: Final = 8
_WORD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{5,}")
_TEST_DEF: Final = re.compile(r"^ *def (test_\w+)\(", re.MULTILINE)
_CLASS: Final = re.compile(r"^class (\w+)\(", re.MULTILINE)

Source = tuple[str, Callable[[], str]]  # a document's name and how to read its text


class Corpus:
    """Tool outputs and long messages cut from real documents; see the module docstring."""

    def __init__(self, sources: Sequence[Source], topics: Sequence[Source], seed: int = 0) -> None:
        if not sources or not topics:
            raise ValueError("a corpus needs source files and documentation topics")
        self.seed = seed
        self._sources = tuple(sources)
        self._topics = tuple(topics)
        self._tests = tuple(s for s in self._sources if Path(s[0]).name.startswith("test_")) or self._sources
        self._texts: OrderedDict[str, str] = OrderedDict()

    @classmethod
    def stdlib(cls, seed: int = 0, root: str | None = None) -> Corpus:
        """The library of the running Python (`sysconfig`'s stdlib path), or of `root`."""
        base = Path(root or sysconfig.get_paths()["stdlib"])
        files: list[Path] = []
        for folder, dirs, names in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)  # site-packages is never walked
            files += (Path(folder, name) for name in sorted(names) if name.endswith(".py"))
        sources = [(path.relative_to(base).as_posix(), _reader(path)) for path in files]
        from pydoc_data import topics as pydoc_topics

        docs: dict[str, str] = pydoc_topics.topics
        topics = [(f"pydoc_data/topics.py:{name}", _constant(docs[name])) for name in sorted(docs)]
        return cls(sources, topics, seed)

    @property
    def size(self) -> tuple[int, int]:
        """(source files, documentation topics)."""
        return len(self._sources), len(self._topics)

    # ------------------------------------------------------------------------------------- outputs
    def tool_output(self, name: str, key: str, size: int) -> str:
        """What tool `name` returns for call `key`: exactly `size` UTF-8 bytes of real text."""
        rng = self._rng(f"{name}\0{key}")
        if name == "grep":
            text = self._grep(rng, size)
        elif name == "run_tests":
            text = self._pytest(rng, size)
        else:
            text = self._lines(rng, self._sources, size)
        return fit(text, size)

    def history(self, key: str, tokens: int) -> str:
        """About `tokens` o200k tokens: documentation topics from a place chosen by `key`, then sources."""
        if tokens <= 0:
            return ""
        size = int(tokens * BYTES_PER_TOKEN)
        rng = self._rng(f"history\0{key}")
        parts: list[str] = []
        total = 0
        start = rng.randrange(len(self._topics))
        for index in range(len(self._topics)):
            if total >= size:
                break
            text = self._text(self._topics[(start + index) % len(self._topics)])
            parts.append(text)
            total += len(text.encode())
        if total < size:
            parts.append(self._lines(rng, self._sources, size - total))
        return fit("\n\n".join(parts), size)

    # ------------------------------------------------------------------------------------ shapes
    def _lines(self, rng: random.Random, pool: Sequence[Source], size: int) -> str:
        """Lines of a document from a random line on, continued in other documents when it ends."""
        parts: list[str] = []
        total = 0
        while total < size:
            text = self._text(rng.choice(pool))
            start = text.find("\n", rng.randrange(max(len(text), 1))) + 1
            piece = text[start:] or text
            parts.append(piece)
            total += len(piece.encode())
        return "".join(parts)

    def _grep(self, rng: random.Random, size: int) -> str:
        """`path:line:text` lines that contain a word taken from a random place of a random file."""
        lines: list[str] = []
        total = 0
        for _ in range(_GREP_WORDS):
            word = self._word(rng)
            start = rng.randrange(len(self._sources))
            for index in range(_GREP_FILES):
                source = self._sources[(start + index) % len(self._sources)]
                for line in _matches(source[0], self._text(source), word):
                    lines.append(line)
                    total += len(line.encode()) + 1
                    if total >= size:
                        return "\n".join(lines)
        lines.append(self._lines(rng, self._sources, size - total))
        return "\n".join(lines)

    def _word(self, rng: random.Random) -> str:
        for _ in range(16):
            text = self._text(rng.choice(self._sources))
            found = _WORD.search(text, rng.randrange(max(len(text), 1)))
            if found:
                return found.group()
        return "return"

    def _pytest(self, rng: random.Random, size: int) -> str:
        """A pytest report over one of the library's test files: its real test names, then a failure
        showing a test's real source."""
        name, _ = source = rng.choice(self._tests)
        text = self._text(source)
        tests = _TEST_DEF.findall(text) or ["test_module"]
        cls = (_CLASS.findall(text) or [""])[0]
        node = f"{name}::{cls}::" if cls else f"{name}::"
        failing = rng.randrange(len(tests))
        head = [
            "=" * 29 + " test session starts " + "=" * 30,
            "platform linux -- Python 3.11, pytest-8.3.4, pluggy-1.5.0",
            f"collected {len(tests)} items",
            "",
        ]
        rows = [
            f"{node}{test} {'FAILED' if i == failing else 'PASSED'} [{(i + 1) * 100 // len(tests):3d}%]"
            for i, test in enumerate(tests)
        ]
        body = _function_source(text, tests[failing])
        failure = ["", "=" * 34 + " FAILURES " + "=" * 35, f"{'_' * 20} {tests[failing]} {'_' * 20}", ""]
        failure += [f"    {line}" for line in body.splitlines()]
        failure += ["E       AssertionError", "", f"{name}: AssertionError"]
        report = "\n".join([*head, *rows, *failure])
        if len(report.encode()) < size:
            report += "\n" + self._lines(rng, self._tests, size - len(report.encode()))
        return report

    # ------------------------------------------------------------------------------------ helpers
    def _rng(self, key: str) -> random.Random:
        digest = blake2b(f"{self.seed}\0{key}".encode(), digest_size=8).digest()
        return random.Random(int.from_bytes(digest, "big"))

    def _text(self, source: Source) -> str:
        name, read = source
        text = self._texts.get(name)
        if text is None:
            text = read()
            self._texts[name] = text
            if len(self._texts) > _CACHED_FILES:
                self._texts.popitem(last=False)
        else:
            self._texts.move_to_end(name)
        return text


def fit(text: str, size: int) -> str:
    """`text` cut (or padded with newlines) to exactly `size` UTF-8 bytes, never mid-character."""
    data = text.encode()[:size].decode(errors="ignore")
    return data + "\n" * (size - len(data.encode()))


def _matches(name: str, text: str, word: str) -> list[str]:
    """grep -n of `word` in `text`, as `name:line:text` lines."""
    found: list[str] = []
    position, line_number, counted = 0, 1, 0
    while (hit := text.find(word, position)) >= 0:
        start = text.rfind("\n", 0, hit) + 1
        end = text.find("\n", hit)
        end = len(text) if end < 0 else end
        line_number += text.count("\n", counted, start)
        counted = start
        found.append(f"{name}:{line_number}:{text[start:end]}")
        position = end + 1
    return found


def _function_source(text: str, function: str) -> str:
    """The source of `def function(` up to the next definition at its indentation or less."""
    match = re.search(rf"^( *)def {re.escape(function)}\(", text, re.MULTILINE)
    if match is None:
        return ""
    indent = len(match.group(1))
    lines = text[match.start() :].splitlines()
    body = [lines[0]]
    for line in lines[1:]:
        stripped = line.lstrip()
        if stripped and len(line) - len(stripped) <= indent:
            break
        body.append(line)
    return "\n".join(body).rstrip()


def _reader(path: Path) -> Callable[[], str]:
    return lambda: path.read_text(encoding="utf-8", errors="replace")


def _constant(text: str) -> Callable[[], str]:
    return lambda: text

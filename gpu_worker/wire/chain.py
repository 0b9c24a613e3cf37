"""Digest of a token chain, folded in fixed blocks.

The box and the worker must agree on "the worker holds exactly these N tokens" without sending them. Each
side folds the chain in blocks of BLOCK_TOKENS tokens: h[0] = b"", h[k+1] = H(h[k] || block k); the digest
of a chain of length L is H(h[L // B] || tail || L). Because the fold is over fixed blocks, the digest of
a chain does not depend on how it was split across requests, extending it costs O(new tokens), and the
block hashes h[k] are the keys of automatic prefix caching (as vLLM's prefix caching hashes KV blocks):
two chains share their first k blocks exactly when their h[k] agree.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Sequence
from hashlib import blake2b

BLOCK_TOKENS = 64
DIGEST_SIZE = 16


def _pack(tokens: Sequence[int]) -> bytes:
    packed = array("I", tokens)
    if sys.byteorder == "big":  # the wire format is little-endian everywhere
        packed.byteswap()
    return packed.tobytes()


def fold_block(previous: bytes, block: Sequence[int]) -> bytes:
    """The hash of a full block chained after `previous` (b"" for the first block)."""
    return _fold_packed(previous, _pack(block))


def _fold_packed(previous: bytes, packed_block: bytes) -> bytes:
    return blake2b(previous + packed_block, digest_size=DIGEST_SIZE).digest()


class ChainDigest:
    """Incremental digest of a growing token chain.

    The worker keeps one 16-byte hash per full block (its prefix-cache keys); the box needs only the digest,
    so `keep_blocks=False` keeps just the last block hash.
    """

    __slots__ = ("_block_hashes", "_keep_blocks", "_last", "_length", "_tail")

    def __init__(self, tokens: Iterable[int] = (), *, keep_blocks: bool = True) -> None:
        self._keep_blocks = keep_blocks
        self._block_hashes: list[bytes] = []
        self._last = b""
        self._tail: list[int] = []
        self._length = 0
        self.extend(tokens)

    def __len__(self) -> int:
        return self._length

    @property
    def block_hashes(self) -> Sequence[bytes]:
        """h[1..k] for the k full blocks of the chain (empty with keep_blocks=False)."""
        return self._block_hashes

    def extend(self, tokens: Iterable[int]) -> None:
        """Append tokens to the chain."""
        # Block-wise: fill the pending tail, then fold whole blocks straight from the packed input, so a
        # 100k-token chain costs ~1.5k hash calls and no per-token Python work.
        added = list(tokens)
        pending = self._tail + added
        packed = _pack(pending)
        block_bytes = BLOCK_TOKENS * 4
        full = len(pending) // BLOCK_TOKENS
        last = self._last
        for k in range(full):
            last = _fold_packed(last, packed[k * block_bytes : (k + 1) * block_bytes])
            if self._keep_blocks:
                self._block_hashes.append(last)
        self._last = last
        self._tail = pending[full * BLOCK_TOKENS :]
        self._length += len(added)

    def digest(self) -> bytes:
        """The digest of the whole chain (DIGEST_SIZE bytes)."""
        return blake2b(
            self._last + _pack(self._tail) + self._length.to_bytes(8, "little"), digest_size=DIGEST_SIZE
        ).digest()

    def copy(self) -> ChainDigest:
        """An independent copy (for a fork of the chain)."""
        other = ChainDigest(keep_blocks=self._keep_blocks)
        other._block_hashes = list(self._block_hashes)
        other._last = self._last
        other._tail = list(self._tail)
        other._length = self._length
        return other


def digest_of(tokens: Sequence[int]) -> bytes:
    """The digest of `tokens` in one call."""
    return ChainDigest(tokens).digest()


def block_hashes_of(tokens: Sequence[int]) -> list[bytes]:
    """h[1..k] of `tokens` (only full blocks)."""
    return list(ChainDigest(tokens).block_hashes)

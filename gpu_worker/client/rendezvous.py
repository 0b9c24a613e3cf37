"""Rendezvous (highest random weight) hashing of chain ids onto workers.

Every box computes the same order from the same target list, a key moves only when its own worker
leaves (about 1/N of the keys per membership change), and the order beyond the owner is the failover
sequence, so a dead owner's chains spread over the survivors instead of piling onto one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import blake2b

from gpu_worker.wire.chain import BLOCK_TOKENS, digest_of, fold_block

__all__ = ["rank", "routing_key_of_chain"]


def _score(key: str, target: str) -> int:
    return int.from_bytes(blake2b(f"{key}\0{target}".encode(), digest_size=8).digest(), "big")


def rank(key: str, targets: Sequence[str]) -> list[str]:
    """`targets` ordered by preference for `key` (owner first); ties broken by the target's name."""
    return sorted(targets, key=lambda t: (-_score(key, t), t))


def routing_key_of_chain(chain: Sequence[int]) -> str:
    """A stable key for a chain without a cache key: the hash of its first full block (the header of a
    conversation), else of the whole (short) chain."""
    if len(chain) >= BLOCK_TOKENS:
        return "block:" + fold_block(b"", chain[:BLOCK_TOKENS]).hex()
    return "chain:" + digest_of(chain).hex()

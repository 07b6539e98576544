"""Deterministic validation split by seed.

A row goes to validation when sha256(seed, row content) maps below `fraction`: the same seed
always gives the same split, appending rows never moves an existing row to the other side, and
duplicates cannot straddle the split. When the hash picks no row at all (tiny sets) the row with
the smallest hash is held out, so a requested split is never empty.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def row_hash(key: str, seed: int) -> float:
    """A uniform number in [0, 1) from the row's content and the seed."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_indices(keys: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, validation indices) of rows identified by their content keys."""
    if fraction <= 0 or len(keys) < 2:
        return list(range(len(keys))), []
    hashes = [row_hash(key, seed) for key in keys]
    validation = [i for i, h in enumerate(hashes) if h < fraction]
    if not validation:
        validation = [min(range(len(keys)), key=hashes.__getitem__)]
    held = set(validation)
    if len(held) == len(keys):  # every row hashed low: keep the highest one for training
        held.discard(max(range(len(keys)), key=hashes.__getitem__))
    return [i for i in range(len(keys)) if i not in held], sorted(held)

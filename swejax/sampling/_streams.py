"""Random streams named by what they draw for, so a draw never depends on where or when it runs.

A sequence's stream is a 64-bit id of its parts (phase, iteration, task, sample); the engine
draws the token at position p of the sequence from (seed, stream, p) (`_programs.token_keys`).
The id is a hash of the parts' JSON, not Python's `hash`, which is salted per process.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np


def stream_id(*parts: str | int) -> int:
    """The stream of a sequence named by `parts`, e.g. ("dapo", 3, "repo__task-1", 7)."""
    digest = hashlib.blake2b(json.dumps(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def stream_words(stream: int) -> np.ndarray:
    """The two uint32 words of a 64-bit stream id, as the engine's state holds them."""
    if not 0 <= stream < 1 << 64:
        raise ValueError(f"a stream id is a 64-bit unsigned integer, got {stream}")
    return np.array([stream >> 32, stream & 0xFFFFFFFF], np.uint32)

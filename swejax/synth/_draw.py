"""Which mutations a candidate gets: a draw keyed by (seed, package, candidate index).

Keying each draw by its index, not by a stream shared across candidates, means a candidate's
mutations do not depend on what earlier candidates did, on timing, or on how many ran before.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence

from swejax.synth._mutate import Mutation

Pool = Mapping[str, Mapping[str, Sequence[Mutation]]]  # path -> operator -> mutations


def keyed_rng(seed: int, package: str, index: int, purpose: str = "mutation") -> random.Random:
    """A generator for one candidate and one purpose (its mutations, its issue text, ...)."""
    digest = hashlib.sha256(f"{seed}\0{package}\0{index}\0{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _one(pool: Pool, rng: random.Random, exclude: str = "") -> Mutation | None:
    """An operator first (so the many off-by-one sites do not crowd out the rest), then a file
    that has one, then a site."""
    operators = sorted({op for path, ops in pool.items() if path != exclude for op in ops})
    if not operators:
        return None
    operator = rng.choice(operators)
    files = sorted(path for path, ops in pool.items() if operator in ops and path != exclude)
    sites = pool[rng.choice(files)][operator]
    return sites[rng.randrange(len(sites))]


def draw(pool: Pool, rng: random.Random, two_file_share: float) -> tuple[Mutation, ...]:
    """One mutation, or with probability `two_file_share` two in two different files."""
    first = _one(pool, rng)
    if first is None:
        return ()
    if rng.random() < two_file_share:
        second = _one(pool, rng, exclude=first.path)
        if second is not None:
            return (first, second)
    return (first,)

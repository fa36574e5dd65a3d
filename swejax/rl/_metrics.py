"""Pass@1 over k runs with its standard error, Pass@k by the unbiased estimator, and the task
pool curation between DAPO stages (docs/method.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k draws (without replacement) from n runs, c of them
    correct, is correct: 1 - C(n - c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_metrics(outcomes: Mapping[str, Sequence[bool]], k: int | None = None) -> dict[str, float]:
    """outcomes: task -> whether each of its runs resolved it (the same number of runs each).

    pass@1 is the mean over runs of each run's solve rate over tasks, with the standard error of
    that mean across runs; pass@k averages the unbiased estimator over tasks.
    """
    runs = {len(v) for v in outcomes.values()}
    if len(runs) != 1:
        raise ValueError(f"every task needs the same number of runs, got {sorted(runs)}")
    (n,) = runs
    k = n if k is None else k
    per_run = [sum(v[r] for v in outcomes.values()) / len(outcomes) for r in range(n)]
    mean = sum(per_run) / n
    stderr = (
        math.sqrt(sum((x - mean) ** 2 for x in per_run) / (n - 1) / n) if n > 1 else float("nan")
    )
    at_k = sum(pass_at_k(n, sum(v), k) for v in outcomes.values()) / len(outcomes)
    return {"pass@1": mean, "pass@1_stderr": stderr, f"pass@{k}": at_k, "runs": n}


def curate_pool(
    attempts: Mapping[str, Sequence[bool]], solved_fraction: float = 2 / 3
) -> list[str]:
    """Tasks to keep for the next stage: drop those solved in at least `solved_fraction` of
    their attempts (too easy) and those never solved (no signal)."""
    return sorted(
        task
        for task, results in attempts.items()
        if results and 0 < sum(results) < solved_fraction * len(results)
    )

"""Training curves from a run's metrics rows, as the paper draws them: Pass@1 (with its standard
error) and Pass@k of the evaluations, and submits and mean turns of the rollouts, per
iteration."""

from __future__ import annotations

import os
from collections.abc import Sequence


def write_plots(rows: Sequence, directory: str) -> list[str]:
    """PNG files written to `directory` (none when there is nothing to draw yet)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written = []
    evals = [r for r in rows if r.KIND == "eval"]
    dapo = [r for r in rows if r.KIND == "dapo"]
    if evals:
        x = [r.iterations + 0.5 * (r.stage == "rft") for r in evals]
        k = evals[0].passes.runs
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.errorbar(
            x,
            [r.passes.pass_at_1 for r in evals],
            [r.passes.pass_at_1_stderr for r in evals],
            marker="o",
            capsize=3,
            label="Pass@1",
        )
        ax.plot(x, [r.passes.pass_at_k for r in evals], marker="s", label=f"Pass@{k}")
        ax.set(xlabel="DAPO iterations done (RFT at 0.5)", ylabel="resolved", ylim=(-0.02, 1.02))
        ax.legend()
        written.append(_save(fig, directory, "pass_at_k.png"))
    if dapo:
        x = [r.iteration for r in dapo]
        fig, left = plt.subplots(figsize=(6, 4))
        left.plot(x, [r.rollout.submits for r in dapo], marker="o", color="tab:blue")
        left.set(xlabel="iteration", ylabel="submits")
        right = left.twinx()
        right.plot(x, [r.rollout.mean_turns for r in dapo], marker="s", color="tab:orange")
        right.set_ylabel("mean turns")
        written.append(_save(fig, directory, "submits_and_turns.png"))
    return written


def _save(fig, directory: str, name: str) -> str:
    import matplotlib.pyplot as plt

    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""Training curves from metrics.jsonl, as the paper draws them: Pass@1 (with its standard error)
and Pass@k of the evaluations, and submits and mean turns of the rollouts, per iteration."""

from __future__ import annotations

import os
from collections.abc import Sequence


def write_plots(metrics: Sequence[dict], directory: str) -> list[str]:
    """PNG files written to `directory` (none when there is nothing to draw yet)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written = []
    evals = [m for m in metrics if m["kind"] == "eval"]
    dapo = [m for m in metrics if m["kind"] == "dapo"]
    if evals:
        x = [m["iterations"] + 0.5 * (m["stage"] == "rft") for m in evals]
        k = evals[0]["runs"]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.errorbar(
            x,
            [m["pass@1"] for m in evals],
            [m["pass@1_stderr"] for m in evals],
            marker="o",
            capsize=3,
            label="Pass@1",
        )
        ax.plot(x, [m[f"pass@{k}"] for m in evals], marker="s", label=f"Pass@{k}")
        ax.set(xlabel="DAPO iterations done (RFT at 0.5)", ylabel="resolved", ylim=(-0.02, 1.02))
        ax.legend()
        written.append(_save(fig, directory, "pass_at_k.png"))
    if dapo:
        x = [m["iteration"] for m in dapo]
        fig, left = plt.subplots(figsize=(6, 4))
        left.plot(x, [m["submits"] for m in dapo], marker="o", color="tab:blue")
        left.set(xlabel="iteration", ylabel="submits")
        right = left.twinx()
        right.plot(x, [m["mean_turns"] for m in dapo], marker="s", color="tab:orange")
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

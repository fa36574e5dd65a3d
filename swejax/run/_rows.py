"""The rows of metrics.jsonl: one typed record per RFT phase, DAPO iteration and evaluation.

Each row is written as one flat JSON object with a "kind" ("rft", "dapo", "eval"); nested
parts (the rollout summary, the Pass@k numbers) are merged into it, so the file stays easy to
read with any JSON tool. `row_from_dict` reads one back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np


def mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else 0.0


@dataclasses.dataclass(frozen=True)
class RolloutSummary:
    """What a set of trajectories looks like (harness failures counted, then left out)."""

    trajectories: int
    infrastructure_errors: int
    reward: float
    pass_rate: float
    submits: int
    mean_turns: float
    tokens: int
    format_errors: float  # per trajectory

    @classmethod
    def of(cls, outcomes: Sequence) -> RolloutSummary:
        """The summary of episodes' `swejax.run._processes.Outcome`s (every process's)."""
        usable = [o for o in outcomes if not o.infrastructure_error]
        return cls(
            trajectories=len(outcomes),
            infrastructure_errors=len(outcomes) - len(usable),
            reward=mean(o.reward for o in usable),
            pass_rate=mean(o.resolved for o in usable),
            submits=sum(o.end_reason == "submitted" for o in usable),
            mean_turns=mean(o.num_turns for o in usable),
            tokens=sum(o.tokens for o in usable),
            format_errors=mean(o.format_errors for o in usable),
        )


@dataclasses.dataclass(frozen=True)
class DecodeSummary:
    """How a phase decoded, over every process: the copy of the weights in the rollout layout
    (its bytes on one device, 0 where the training state was decoded in place, and the slowest
    process's seconds), and what the engines' preemption moved (episodes swapped out of the KV
    pool for want of pages, and tokens whose keys and values moved out or back in)."""

    decode_copy_bytes: int = 0
    decode_copy_s: float = 0.0
    preemptions: int = 0
    swapped_tokens: int = 0


@dataclasses.dataclass(frozen=True)
class PassMetrics:
    """Pass@1 (the mean over `runs` runs per task, with its standard error) and Pass@runs."""

    runs: int
    pass_at_1: float
    pass_at_1_stderr: float
    pass_at_k: float  # k = runs

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PassMetrics:
        runs = d["runs"]
        return cls(runs, d["pass@1"], d["pass@1_stderr"], d[f"pass@{runs}"])

    def to_dict(self) -> dict[str, Any]:
        k = {f"pass@{self.runs}": self.pass_at_k}
        return {
            "pass@1": self.pass_at_1,
            "pass@1_stderr": self.pass_at_1_stderr,
            **k,
            "runs": self.runs,
        }


@dataclasses.dataclass(frozen=True)
class RftRow:
    KIND: ClassVar[str] = "rft"
    trajectories: int  # the source's trajectories
    trained_on: int  # the resolved ones
    steps: int  # optimizer steps over all epochs
    loss_first: float
    loss_last: float
    fill_ratio: float  # tokens of the packed rows that are not padding
    seconds: float
    decoding: DecodeSummary = DecodeSummary()  # rft.source=policy: its rollout


@dataclasses.dataclass(frozen=True)
class DapoRow:
    KIND: ClassVar[str] = "dapo"
    iteration: int
    rollout: RolloutSummary
    filtered_fraction: float  # usable trajectories dropped for a zero advantage
    optimizer_steps: int
    skipped_steps: int  # non-finite loss or gradient: not applied
    idle_fraction: float  # of the rollout's wall time, no slot sampling
    logprob_gap_mean: float  # |sampler - trainer| log-probability over sampled tokens
    logprob_gap_max: float
    # Of the trajectories that trained: the fraction with a positive advantage, and the mean
    # advantage over their action tokens. The loss is a token-level mean, so a negative
    # token mean says the step pushes sampled tokens down more than up (docs/stability.md).
    advantage_positive: float
    advantage_token_mean: float
    seconds: float
    rollout_s: float
    recompute_s: float
    train_s: float
    # Means over the applied optimizer steps (0 when none ran).
    loss: float
    grad_norm: float
    entropy: float
    clip_low: float
    clip_high: float
    fill_ratio: float
    decoding: DecodeSummary = DecodeSummary()


@dataclasses.dataclass(frozen=True)
class EvalRow:
    KIND: ClassVar[str] = "eval"
    index: int  # evaluations before this one
    stage: str  # what training came before: "initial", "rft" or "dapo"
    iterations: int  # DAPO iterations done
    passes: PassMetrics
    rollout: RolloutSummary
    seconds: float
    decoding: DecodeSummary = DecodeSummary()


Row = RftRow | DapoRow | EvalRow
_ROWS: dict[str, type] = {cls.KIND: cls for cls in (RftRow, DapoRow, EvalRow)}
_PARTS = {"rollout": RolloutSummary, "passes": PassMetrics, "decoding": DecodeSummary}


def row_to_dict(row: Row) -> dict[str, Any]:
    """One flat JSON-ready dict, its "kind" first."""
    flat: dict[str, Any] = {"kind": row.KIND}
    for field in dataclasses.fields(row):
        value = getattr(row, field.name)
        if isinstance(value, PassMetrics):
            flat.update(value.to_dict())
        elif dataclasses.is_dataclass(value):
            flat.update(dataclasses.asdict(value))
        else:
            flat[field.name] = value
    return flat


def row_from_dict(flat: dict[str, Any]) -> Row:
    cls = _ROWS[flat["kind"]]
    values = {}
    for field in dataclasses.fields(cls):
        part = _PARTS.get(field.name)
        if part is PassMetrics:
            values[field.name] = PassMetrics.from_dict(flat)
        elif part is not None:  # a field with a default may be missing from older rows
            names = [f.name for f in dataclasses.fields(part) if f.name in flat]
            values[field.name] = part(**{name: flat[name] for name in names})
        else:
            values[field.name] = flat[field.name]
    return cls(**values)


@dataclasses.dataclass
class Progress:
    """Where a run stands: saved with every checkpoint."""

    rft_done: bool = False
    iteration: int = 0  # DAPO iterations finished
    evaluations: int = 0  # evaluations finished (before training, after RFT, after iterations)

    def counts(self, row: Row) -> bool:
        """Whether the last checkpoint includes the work this row reports."""
        if isinstance(row, RftRow):
            return self.rft_done
        if isinstance(row, DapoRow):
            return row.iteration < self.iteration
        return row.index < self.evaluations

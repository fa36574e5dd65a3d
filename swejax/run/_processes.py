"""How a run's work is shared between its processes, and what they tell each other.

A task belongs to one process (the i-th task of a phase's list to process i mod P), with all
of its samples, so a group's advantages are computed where its trajectories are. What every
process needs of the others' episodes is small (`Outcome`: resolved, reward, turns, ...) and
is gathered; tokens stay where they were sampled and are trained on there (`swejax.run._phases`
packs each process's rows of a global batch). With one process every function here is the
identity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from swejax import distributed


def mine(tasks: Sequence) -> list:
    """This process's tasks of `tasks`: the i-th to process i mod P."""
    p, count = distributed.process_index(), distributed.process_count()
    return [task for i, task in enumerate(tasks) if i % count == p]


def my_jobs(jobs: Sequence[tuple]) -> list[tuple]:
    """This process's (task, sample) jobs: every sample of its tasks (`mine`), in job order."""
    tasks = list(dict.fromkeys(task.instance_id for task, _ in jobs))
    kept = set(mine(tasks))
    return [(task, g) for task, g in jobs if task.instance_id in kept]


def job_order(jobs: Sequence[tuple]) -> dict[tuple[str, int], int]:
    """(task id, sample) -> its place in the phase's job list (the same on every process)."""
    return {(task.instance_id, g): i for i, (task, g) in enumerate(jobs)}


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the run's metrics need of one finished episode (gathered from every process)."""

    task_id: str
    group: int
    resolved: bool
    reward: float
    end_reason: str
    infrastructure_error: str
    num_turns: int
    format_errors: int
    tokens: int

    @classmethod
    def of(cls, t) -> Outcome:
        return cls(
            t.task_id,
            t.group,
            bool(t.resolved),
            float(t.reward),
            t.end_reason,
            t.infrastructure_error,
            t.num_turns,
            len(t.format_error_turns),
            len(t.tokens),
        )


def gathered_outcomes(trajectories: Sequence, order: dict) -> list[Outcome]:
    """Every process's episodes of a phase as `Outcome`s, in job order."""
    local = [dataclasses.asdict(Outcome.of(t)) for t in trajectories]
    if distributed.process_count() > 1:
        local = [row for part in distributed.allgather_json(local) for row in part]
    outcomes = [Outcome(**row) for row in local]
    return sorted(outcomes, key=lambda o: order[o.task_id, o.group])


def gathered_keys(keys: Sequence[tuple[str, int]], order: dict) -> list[tuple[str, int]]:
    """Every process's (task id, sample) keys, in job order."""
    local = [list(k) for k in keys]
    if distributed.process_count() > 1:
        local = [row for part in distributed.allgather_json(local) for row in part]
    return sorted(((str(t), int(g)) for t, g in local), key=lambda k: order[k])


def global_max(value: int | float) -> int | float:
    """The largest of every process's `value`, of the type given."""
    kind = float if isinstance(value, float) else int
    gathered = distributed.allgather(np.float64(value) if kind is float else np.int64(value))
    return kind(gathered.max())


def global_sums(*values: float) -> np.ndarray:
    """The sum over processes of each value."""
    return distributed.allgather(np.asarray(values, np.float64)).sum(axis=0)

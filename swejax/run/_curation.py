"""Curation between stages: the next stage's task pool from the last stage's DAPO attempts
(drop the tasks solved in at least 2/3 of attempts, and those never solved)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

from swejax.rl import curate_pool
from swejax.rollout import read_trajectories
from swejax.run._phases import RunError
from swejax.tasks import Task

logger = logging.getLogger("swejax.run")


def attempts_of_run(run_path: str) -> dict[str, list[bool]]:
    """task -> whether each of its DAPO rollouts in a finished run resolved it (harness
    failures left out): the record `curate_pool` reads between stages."""
    directory = os.path.join(run_path, "trajectories")
    if not os.path.isdir(directory):
        raise RunError(f"tasks.curate_from={run_path!r}: no trajectories directory in it")
    attempts: dict[str, list[bool]] = {}
    for name in sorted(os.listdir(directory)):
        if name.startswith("iter_") and name.endswith(".jsonl"):
            for t in read_trajectories(os.path.join(directory, name)):
                if not t.infrastructure_error:
                    attempts.setdefault(t.task_id, []).append(t.resolved)
    if not attempts:
        raise RunError(f"tasks.curate_from={run_path!r}: the run has no DAPO trajectories")
    return attempts


def curated_tasks(tasks: Sequence[Task], run_path: str, record: str | None = None) -> list[Task]:
    """The tasks of `tasks` that curation keeps after the run at `run_path` (attempted there,
    solved sometimes but in under 2/3 of the attempts); `record` gets a JSON account of what
    was kept and dropped."""
    attempts = attempts_of_run(run_path)
    keep = set(curate_pool(attempts))
    kept = [t for t in tasks if t.instance_id in keep]
    candidates = [attempts[t.instance_id] for t in tasks if t.instance_id in attempts]
    account = {
        "source": os.path.abspath(run_path),
        "tasks": len(tasks),
        "attempted": len(candidates),
        "never_solved": sum(not any(a) for a in candidates),
        "mostly_solved": sum(sum(a) >= 2 / 3 * len(a) for a in candidates),
        "kept": [t.instance_id for t in kept],
    }
    if record:
        with open(record, "w") as f:
            json.dump(account, f, indent=2)
    if not kept:
        raise RunError(
            f"curating against {run_path!r} leaves no training task "
            f"({account['attempted']} attempted: {account['never_solved']} never solved, "
            f"{account['mostly_solved']} solved in at least 2/3 of attempts)"
        )
    logger.info("curated pool: %d of %d tasks kept", len(kept), len(tasks))
    return kept

"""A run's directory: where everything a run writes lives, and its metrics rows.

runs/<name>/
    config.json            the resolved config of the run
    metrics.jsonl          one row per finished RFT phase, DAPO iteration and evaluation
    trajectories/          iter_NNNNN.jsonl, eval_NNNNN.jsonl, rft_00000.jsonl (with many
                           processes, each writes its own: iter_NNNNN.process_P.jsonl)
    logs/process_P.log     each process's log
    checkpoints/           orbax: parameters, optimizer state, and where the run stands
    plots/                 training.png (Pass@1 with its standard error, Pass@k, submits and
                           mean turns) and diagnostics.png (per DAPO iteration: reward, pass
                           rate, clipping, log-prob gap, loss, tokens/s, idle, ...)
    report.html            the run on one page: config, evaluations, plots, iterations
    pool.json              the curated task pool, when tasks.curate_from is set
    eval/                  the eval mode's, by default: trajectories.jsonl (per process with
                           many), report.json, config.json, process_P.log

With many processes, process 0 writes what there is one of (config.json, metrics.jsonl,
plots, report.html, pool.json); the directory must be one every process sees (a shared file
system).
"""

from __future__ import annotations

import json
import logging
import os

from swejax import distributed
from swejax.config import Config, config_to_json
from swejax.run._rows import Progress, Row, row_from_dict, row_to_dict


class RunDirectory:
    def __init__(self, config: Config):
        self.path = os.path.abspath(os.path.join(config.run_dir, config.name))
        self.trajectories = os.path.join(self.path, "trajectories")
        self.plots = os.path.join(self.path, "plots")
        self.report = os.path.join(self.path, "report.html")
        self.checkpoints = os.path.join(self.path, "checkpoints")
        self.metrics = os.path.join(self.path, "metrics.jsonl")
        self.pool = os.path.join(self.path, "pool.json")
        self.logs = os.path.join(self.path, "logs")
        self.leader = distributed.is_leader()
        for directory in (self.path, self.trajectories, self.plots, self.logs):
            os.makedirs(directory, exist_ok=True)
        if self.leader:
            with open(os.path.join(self.path, "config.json"), "w") as f:
                f.write(config_to_json(config))

    def log_to_file(self) -> None:
        """This process's log lines (swejax's loggers) also go to logs/process_P.log."""
        log_to_file(os.path.join(self.logs, f"process_{distributed.process_index()}.log"))

    def trajectory_file(self, kind: str, index: int) -> str:
        """A fresh file for this process's trajectories of a phase (`fresh_trajectory_file`)."""
        return fresh_trajectory_file(self.trajectories, f"{kind}_{index:05d}")

    def append(self, row: Row) -> None:
        """Add a row, durably: on disk before this returns (process 0 only writes)."""
        if not self.leader:
            return
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row_to_dict(row)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[Row]:
        """Every complete row (a line cut short by a kill is skipped)."""
        if not os.path.exists(self.metrics):
            return []
        with open(self.metrics) as f:
            return [row_from_dict(json.loads(line)) for line in f if line.endswith("\n")]

    def keep_rows(self, progress: Progress) -> None:
        """Drop the rows of work the last checkpoint does not include (a killed run's)."""
        if not self.leader:
            return
        rows = [row for row in self.rows() if progress.counts(row)]
        with open(self.metrics, "w") as f:
            f.writelines(json.dumps(row_to_dict(row)) + "\n" for row in rows)


def log_to_file(path: str) -> None:
    """This process's log lines (swejax's loggers, progress too) also go to `path`."""
    root = logging.getLogger("swejax")
    if any(getattr(h, "baseFilename", None) == os.path.abspath(path) for h in root.handlers):
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))


def fresh_trajectory_file(folder: str, name: str) -> str:
    """This process's file for trajectories `name` in `folder`: NAME.jsonl, or with many
    processes NAME.process_P.jsonl each, emptied. A partial one from a killed run goes: this
    process's own, and (process 0) those of processes this run does not have, when it resumed
    on another number of processes."""
    count = distributed.process_count()
    mine = name + (f".process_{distributed.process_index()}" if count > 1 else "")
    path = os.path.join(folder, mine + ".jsonl")
    stale = [path]
    if distributed.is_leader():
        for other in os.listdir(folder):
            if other.startswith(name + ".") and other.endswith(".jsonl"):
                process = other[len(name) + 1 : -len(".jsonl")].removeprefix("process_")
                if count == 1 or (process.isdigit() and int(process) >= count):
                    stale.append(os.path.join(folder, other))
        if count > 1:
            stale.append(os.path.join(folder, name + ".jsonl"))
    for old in stale:
        if os.path.exists(old):
            os.remove(old)
    return path

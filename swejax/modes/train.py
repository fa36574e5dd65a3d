"""`train`: RFT, then DAPO iterations, in runs/<name>/ (a re-run resumes); a summary at the end."""

from __future__ import annotations

import argparse
import logging

from swejax import builder
from swejax.config import Config

SUMMARY = "RL training: RFT, then DAPO iterations, resumable (the default)"
logger = logging.getLogger("swejax")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # everything is in the config


def run(config: Config, options: argparse.Namespace) -> int:
    from swejax import models, run

    builder.require_runtime(config.tasks.runtime)  # before minutes of building
    all_tasks = builder.load_tasks(config)
    train_tasks, eval_tasks = builder.split_tasks(config, all_tasks)
    built = builder.build(config)
    ctx = run.open_run(built, train_tasks, eval_tasks)
    logger.info(
        "run %s: %d training tasks, %d evaluation tasks, %s parameters",
        ctx.run.path,
        len(ctx.train_tasks),
        len(ctx.eval_tasks),
        f"{models.count_params(built.model_config):,}",
    )
    rows = run.train(ctx)
    if ctx.run.leader:  # the others' metrics are process 0's
        print(summary_table(rows, ctx.run.path))
        print(f"report {ctx.run.report}")
    return 0


def summary_table(rows, path: str) -> str:
    lines = [f"run {path}", "", "stage          reward  pass   submits  turns  pass@1 (stderr)"]
    for row in rows:
        if row.KIND == "rft":
            lines.append(
                f"rft            trained on {row.trained_on} of {row.trajectories}, "
                f"loss {row.loss_first:.3f} -> {row.loss_last:.3f}"
            )
            continue
        r = row.rollout
        stats = f"{r.reward:6.3f}  {r.pass_rate:5.3f}  {r.submits:7d}  {r.mean_turns:5.1f}"
        if row.KIND == "dapo":
            lines.append(f"iteration {row.iteration:<4} {stats}")
        else:
            p = row.passes
            stage = row.stage if row.stage != "dapo" else f"it {row.iterations}"
            lines.append(
                f"eval {stage:<9} {stats}  {p.pass_at_1:.3f} ({p.pass_at_1_stderr:.3f}), "
                f"pass@{p.runs} {p.pass_at_k:.3f}"
            )
    return "\n".join(lines)

"""`eval`: Pass@1 (mean of k runs, with its standard error) and Pass@k of a model or a run on a
task set, through the same evaluation the training loop runs; SWE-bench predictions."""

from __future__ import annotations

import argparse
import json
import os

from swejax import builder
from swejax.config import Config
from swejax.errors import UserError
from swejax.modes import positive_int

SUMMARY = "Pass@1 and Pass@k of a model or a run on a task set, SWE-bench predictions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", default=None, help="task source (default: config.tasks.source)")
    parser.add_argument(
        "--set", default="", help="a named task set, e.g. verified-50 (ids within --tasks)"
    )
    parser.add_argument(
        "--only", action="append", default=[], help="evaluate only this id (repeatable)"
    )
    parser.add_argument("--run", default="", help="a run directory: its latest weights")
    parser.add_argument(
        "--runs", type=positive_int, default=None, help="k runs per task (default: eval.runs)"
    )
    parser.add_argument("--temperature", type=float, default=None, help="default: eval.temperature")
    parser.add_argument("--top-k", type=int, default=0, help="0: off")
    parser.add_argument("--top-p", type=float, default=1.0, help="1.0: off")
    parser.add_argument(
        "--predictions", default="", help="SWE-bench predictions JSONL (first run per task)"
    )
    parser.add_argument("--report", default="", help="write the metrics as JSON here")
    parser.add_argument(
        "--write-eval-scripts",
        default="",
        metavar="DIR",
        help="write each chosen task's grading script (for SWE-bench-family tasks the "
        "harness's /eval.sh) as DIR/<instance_id>.sh and exit, without building a model",
    )
    parser.epilog = (
        "Without --set or --only, the tasks are the config's evaluation tasks (tasks.eval, "
        "else the training tasks)."
    )


def _chosen_tasks(config: Config, options: argparse.Namespace) -> list:
    from swejax.tasks import TASK_SETS, select_tasks

    tasks = builder.load_tasks(config, options.tasks)
    wanted = list(options.only)
    if options.set:
        if options.set not in TASK_SETS:
            raise UserError(f"unknown task set {options.set!r}; one of {', '.join(TASK_SETS)}")
        wanted += TASK_SETS[options.set]
    if not wanted:
        return select_tasks(tasks, config.tasks.train, config.tasks.eval)[1]
    by_id = {t.instance_id: t for t in tasks}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise UserError(f"{len(missing)} task ids are not in the task source, e.g. {missing[0]}")
    return [by_id[i] for i in dict.fromkeys(wanted)]


def _write_eval_scripts(tasks: list, folder: str) -> int:
    """The scripts grading would run, one file per task; nothing else is built or run."""
    from swejax.env.grading import eval_script

    scripts = {task.instance_id: eval_script(task) for task in tasks}  # all, before writing
    os.makedirs(folder, exist_ok=True)
    for instance_id, script in scripts.items():
        with open(os.path.join(folder, f"{instance_id}.sh"), "w", encoding="utf-8") as f:
            f.write(script)
    print(f"wrote {len(scripts)} eval scripts to {folder}")
    return 0


def run(config: Config, options: argparse.Namespace) -> int:
    from swejax import distributed
    from swejax import run as runs

    tasks = _chosen_tasks(config, options)
    if options.write_eval_scripts:
        return _write_eval_scripts(tasks, options.write_eval_scripts)
    builder.require_runtime(config.tasks.runtime)
    k = options.runs or config.eval.runs
    temperature = config.eval.temperature if options.temperature is None else options.temperature
    built = builder.build(config)
    source = config.model.checkpoint or f"preset {config.model.preset} (random weights)"
    if options.run:
        step = runs.restore_params(os.path.join(options.run, "checkpoints"), built.model)
        source = f"{options.run} (checkpoint {step})"
    sampling = runs.Sampling(temperature, False, options.top_k, options.top_p)
    ctx = runs.Context(built, None, [], tasks)
    # Draws as a run's first evaluation: on the same weights and tasks, the same episodes.
    passes, summary, trajectories = runs.evaluate(ctx, tasks, k, sampling, 0, None, "eval")
    # With many processes each ran its share of the tasks; process 0 writes for all.
    firsts = [{"instance_id": t.task_id, "model_patch": t.submission} for t in trajectories]
    firsts = [row for row, t in zip(firsts, trajectories, strict=True) if t.group == 0]
    if distributed.process_count() > 1:
        firsts = [row for part in distributed.allgather_json(firsts) for row in part]
    if not distributed.is_leader():
        return 0
    order = {task.instance_id: i for i, task in enumerate(tasks)}
    firsts.sort(key=lambda row: order[row["instance_id"]])
    if options.predictions:
        with open(options.predictions, "w") as f:
            for row in firsts:
                f.write(json.dumps({**row, "model_name_or_path": source}) + "\n")
    if options.report:
        report = {**passes.to_dict(), **vars(summary), "model": source, "tasks": len(tasks)}
        with open(options.report, "w") as f:
            json.dump(report, f, indent=2)
    print(f"model     {source}")
    print(f"tasks     {len(tasks)}, {k} runs each, temperature {temperature:g}")
    print(f"pass@1    {passes.pass_at_1:.3f} (stderr {passes.pass_at_1_stderr:.3f})")
    print(f"pass@{k:<5} {passes.pass_at_k:.3f}")
    turns = summary.mean_turns
    print(f"submits   {summary.submits} of {summary.trajectories}, mean turns {turns:.1f}")
    return 0

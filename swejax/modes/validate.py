"""`validate-tasks`: per task, the gold patch resolves it and the empty patch does not."""

from __future__ import annotations

import argparse
import json
import os
import time

from swejax import builder
from swejax.config import Config
from swejax.errors import UserError

SUMMARY = "per task: the gold patch resolves it, the empty patch does not"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tasks",
        default=None,
        help="'builtin' or a JSONL file of SWE-bench records (default: config.tasks.source)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ID",
        help="validate only this instance_id (repeatable)",
    )
    parser.add_argument(
        "--runtime",
        default=None,
        choices=("bwrap", "docker"),
        help="sandbox runtime (default: config.tasks.runtime; docker images from "
        "tools/build_images.py)",
    )
    parser.add_argument(
        "--report", metavar="FILE", help="JSON report (default: RUN_DIR/NAME/validate-tasks.json)"
    )


def run(config: Config, options: argparse.Namespace) -> int:
    """Grade the gold and the empty patch of every task; exit 1 if any task is not valid."""
    from swejax import distributed
    from swejax.env.grading import grade
    from swejax.progress import reported, this_process
    from swejax.run._processes import mine
    from swejax.tasks import TaskError

    runtime = options.runtime or config.tasks.runtime
    builder.require_runtime(runtime)
    tasks = builder.load_tasks(config, options.tasks)
    if options.only:
        unknown = sorted(set(options.only) - {t.instance_id for t in tasks})
        if unknown:
            source = options.tasks or config.tasks.source
            raise UserError(f"--only names tasks that are not in {source}: {unknown}")
        tasks = [t for t in tasks if t.instance_id in options.only]
    # With many processes each validates its share on its own host; process 0 reports all.
    distributed.start(config.distributed)
    order = {t.instance_id: i for i, t in enumerate(tasks)}
    rows = []
    for task in reported(mine(tasks), "validate-tasks", "task", process=this_process()):
        start = time.perf_counter()
        try:
            gold, empty = grade(task, task.patch, runtime), grade(task, "", runtime)
            problem = gold.infrastructure_error or empty.infrastructure_error
            valid = gold.resolved and not empty.resolved and not problem
            row = {
                "gold_resolved": gold.resolved,
                "empty_resolved": empty.resolved,
                "error": problem,
                "gold_outcomes": gold.outcomes,
            }
        except TaskError as error:
            valid, row = False, {"gold_resolved": None, "empty_resolved": None, "error": str(error)}
        seconds = round(time.perf_counter() - start, 2)
        rows.append({"instance_id": task.instance_id, "valid": valid, "seconds": seconds, **row})
    if distributed.process_count() > 1:
        rows = [row for part in distributed.allgather_json(rows) for row in part]
        rows.sort(key=lambda r: order[r["instance_id"]])
    valid = sum(r["valid"] for r in rows)
    if not distributed.is_leader():
        return 0 if valid == len(rows) else 1
    report = options.report or os.path.join(config.run_dir, config.name, "validate-tasks.json")
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report, "w") as f:
        json.dump({"runtime": runtime, "tasks": rows}, f, indent=2)
    width = max([len(r["instance_id"]) for r in rows] + [4])
    print(f"{'task':<{width}}  gold  empty  valid  seconds")
    for r in rows:
        marks = [_mark(r["gold_resolved"]), _mark(r["empty_resolved"]), _mark(r["valid"])]
        print(
            f"{r['instance_id']:<{width}}  {marks[0]:<4}  {marks[1]:<5}  {marks[2]:<5}  "
            f"{r['seconds']:.1f}" + (f"  {r['error'][:60]}" if r["error"] else "")
        )
    print(f"{valid} of {len(rows)} tasks valid; report: {report}")
    return 0 if valid == len(rows) else 1


def _mark(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")

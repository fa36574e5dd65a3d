"""`tasks`: the training and evaluation tasks the config chooses, a line each, before a run.

Loads `tasks.source` (its sources together) and splits it as `train` does (`tasks.train`,
`tasks.eval`, `tasks.eval_repos`), so a split can be checked in seconds rather than after a model
is built.
"""

from __future__ import annotations

import argparse
import collections
import json

from swejax import builder
from swejax.config import Config
from swejax.tasks import split_list

SUMMARY = "list the training and evaluation tasks the config chooses"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")


def _repos(tasks: list) -> dict[str, int]:
    return dict(sorted(collections.Counter(t.repo for t in tasks).items()))


def run(config: Config, options: argparse.Namespace) -> int:
    train, held_out = builder.split_tasks(config, builder.load_tasks(config))
    chosen = config.tasks
    # Nothing held out: evaluation reuses the training tasks (select_tasks' rule).
    reused = not (split_list(chosen.eval) or split_list(chosen.eval_repos))
    if options.json:
        split = {
            "source": config.tasks.source,
            "train": [t.instance_id for t in train],
            "eval": [t.instance_id for t in held_out],
            "eval_reuses_train": reused,
        }
        print(json.dumps(split, indent=2))
        return 0
    print(f"source  {config.tasks.source}")
    for name, chosen in (("train", train), ("eval", held_out)):
        repos = ", ".join(f"{repo} ({n})" for repo, n in _repos(chosen).items())
        print(f"{name:<6}  {len(chosen)} tasks from {len(_repos(chosen))} repositories: {repos}")
    if reused:
        print("eval    reuses the training tasks (nothing is held out)")
    for name, chosen in (("train", train), ("eval", [] if reused else held_out)):
        for task in chosen:
            print(f"{name:<6}  {task.repo:<32}  {task.instance_id}")
    return 0

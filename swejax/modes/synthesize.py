"""`synthesize`: SWE-bench-style tasks from a real package, with bugs injected into its sdist."""

from __future__ import annotations

import argparse

from swejax import builder
from swejax.config import Config
from swejax.errors import UserError

SUMMARY = "make SWE-bench-style tasks from a PyPI package: --package NAME==VERSION --out FILE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--package", required=True, metavar="NAME==VERSION", help="pinned sdist")
    parser.add_argument("--out", required=True, metavar="FILE", help="the JSONL file to write")
    parser.add_argument("--max-tasks", type=int, default=10, metavar="N", help="default 10")
    parser.add_argument("--seed", type=int, default=0, help="keys every draw (default 0)")
    parser.add_argument(
        "--max-tries", type=int, default=0, metavar="N", help="mutants to try (default 15 per task)"
    )
    parser.add_argument(
        "--max-fail", type=int, default=30, metavar="N",
        help="keep mutants that fail 1 to N tests (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--sdist", default="", metavar="PATH",
        help="a local sdist (archive or unpacked folder) instead of downloading one",
    )  # fmt: skip
    parser.epilog = (
        "Downloads the sdist with pip (its only network use), runs its tests with the system\n"
        "python3 in bubblewrap, and writes FILE, FILE.report.json and the buggy repositories in a\n"
        "folder next to FILE (tasks.jsonl -> tasks.repos/). See docs/synthesis.md."
    )


def check_arguments(options: argparse.Namespace) -> None:
    from swejax.synth import parse_requirement

    parse_requirement(options.package)
    for flag in ("max_tasks", "max_fail"):
        if getattr(options, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be a positive integer")
    if options.max_tries < 0:
        raise UserError("--max-tries must be 0 (the default) or more")


def run(config: Config, options: argparse.Namespace) -> int:
    """Write the tasks; exit 1 when no mutant made a valid task."""
    from swejax.synth import SynthOptions, synthesize

    builder.require_runtime("bwrap")
    report = synthesize(
        SynthOptions(
            package=options.package,
            out=options.out,
            max_tasks=options.max_tasks,
            seed=options.seed,
            max_tries=options.max_tries,
            max_fail=options.max_fail,
            sdist=options.sdist,
        )
    )
    print(summary(report))
    return 0 if report["tasks_written"] else 1


def summary(report: dict) -> str:
    per_task = report["seconds_per_task"]
    return "\n".join(
        [
            f"{report['package']}: {report['tests_found']} tests, {report['tests_passing']} "
            f"passing every run, {report['tests_flaky']} flaky",
            f"mutants: {report['mutants_kept']} kept of {report['mutants_tried']} tried "
            f"({report['share_kept']:.0%}); dropped: "
            + ", ".join(f"{k} {v}" for k, v in report["dropped"].items() if v),
            f"{report['tasks_written']} tasks written to {report['out']} in "
            f"{report['seconds_total']:.0f} s"
            + (f" ({per_task:.1f} s per task)" if per_task else ""),
            f"report: {report['out']}.report.json",
        ]
    )

"""The pipeline: sdist, baseline suite, keyed mutants, kept bugs, validated SWE-bench records."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Mapping

from swejax.env.sandbox import SandboxLimits, open_sandbox
from swejax.errors import UserError
from swejax.synth import _issue
from swejax.synth._draw import Pool, draw, keyed_rng
from swejax.synth._fetch import Package, download_sdist, parse_requirement, unpack
from swejax.synth._keep import MutantResult, try_mutant
from swejax.synth._layout import Layout, find_layout
from swejax.synth._mutate import find_mutations
from swejax.synth._records import (
    Bug,
    changed_lines,
    pass_to_pass,
    record,
    write_buggy_repo,
)
from swejax.synth._suite import Baseline, SuiteRun, node_file_exists, run_pytest, split_flaky

logger = logging.getLogger("swejax")
# Reports carry every test's traceback text; the sandbox's default cap would cut the XML.
_LIMITS = SandboxLimits(timeout_seconds=600, output_bytes=64 * 2**20)


@dataclasses.dataclass(frozen=True)
class SynthOptions:
    package: str  # NAME==VERSION
    out: str  # the JSONL file; repositories go to a folder next to it (repos_dir)
    max_tasks: int = 10
    seed: int = 0
    max_tries: int = 0  # mutants to try at most; 0: 15 per task wanted
    max_fail: int = 30  # a mutant that breaks more tests than this is too blunt to keep
    max_pass_to_pass: int = 200
    suite_runs: int = 3  # runs of the unmutated suite, to find the flaky tests
    two_file_share: float = 0.25  # of the candidates: two mutations, in two files
    sdist: str = ""  # a local sdist (archive or folder) to use instead of downloading one

    @property
    def repos_dir(self) -> str:
        stem = os.path.splitext(os.path.basename(self.out))[0]
        return os.path.join(os.path.dirname(os.path.abspath(self.out)), f"{stem}.repos")

    @property
    def tries(self) -> int:
        return self.max_tries or 15 * self.max_tasks


def synthesize(options: SynthOptions, progress: bool | None = None) -> dict:
    """Write the task file and its repositories; returns the report (also written next to it).
    `progress`: False for none, else `swejax.progress` lines (a bar on a terminal)."""
    package = parse_requirement(options.package)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="swejax-synth-") as scratch:
        repo = _sdist(package, options.sdist, scratch)
        seconds["download"] = time.perf_counter() - started
        layout = find_layout(repo)
        originals, pool = _mutation_pool(repo, layout)
        with open_sandbox(repo, "bwrap", _LIMITS) as sandbox:
            mark = time.perf_counter()
            baseline = measure_baseline(sandbox, layout, repo, options.suite_runs)
            seconds["baseline"] = time.perf_counter() - mark
            logger.info(
                "%s: %d tests, %d pass every time, %d flaky; %d mutation sites",
                package.requirement, baseline.found, len(baseline.passing),
                len(baseline.flaky), sum(len(s) for ops in pool.values() for s in ops.values()),
            )  # fmt: skip
            if not baseline.passing:
                raise UserError(f"{package.requirement}: none of its {baseline.found} tests pass")
            shutil.rmtree(options.repos_dir, ignore_errors=True)
            os.makedirs(options.repos_dir)
            context = _Context(
                options, package, f"{package.slug}-{package.version}", layout, repo, sandbox,
                baseline, originals, pool,
            )  # fmt: skip
            records, counts = _candidates(context, seconds, progress)
    os.makedirs(os.path.dirname(os.path.abspath(options.out)), exist_ok=True)
    with open(options.out, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    total = time.perf_counter() - started
    report = _report(options, package, layout, baseline, pool, counts, len(records), total, seconds)
    with open(options.out + ".report.json", "w") as f:
        json.dump(report, f, indent=2)
    return report


def _sdist(package: Package, local: str, scratch: str) -> str:
    """The unpacked sdist in `scratch`: downloaded, or from a local archive or folder."""
    destination = os.path.join(scratch, "sdist")
    if local and os.path.isdir(local):
        return shutil.copytree(
            local, os.path.join(destination, os.path.basename(os.path.normpath(local)))
        )
    if local:
        if not os.path.isfile(local):
            raise UserError(f"--sdist {local} is neither an archive nor a folder")
        return unpack(local, destination)
    logger.info("downloading the sdist of %s", package.requirement)
    return unpack(download_sdist(package, os.path.join(scratch, "download")), destination)


def _mutation_pool(repo: str, layout: Layout) -> tuple[dict[str, str], Pool]:
    originals, pool = {}, {}
    for path in layout.source_files:
        with open(os.path.join(repo, path), "rb") as f:
            data = f.read()
        try:
            originals[path] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        found = find_mutations(path, data)
        if found:
            pool[path] = found
    return originals, pool


def measure_baseline(sandbox, layout: Layout, repo: str, runs: int) -> Baseline:
    """The whole suite once, then its passing tests by id `runs - 1` more times."""
    first = run_pytest(sandbox, layout.test_command, layout.test_paths, _LIMITS.timeout_seconds)
    if not first.outcomes:
        raise UserError(
            f"the test suite does not run on the system python3 (pytest exit {first.exit_code}); "
            f"packages needing other dependencies are out of scope: {_last_line(first)}"
        )
    passed = sorted(n for n, o in first.outcomes.items() if o == "passed")
    later = [
        run_pytest(sandbox, layout.test_command, passed, _LIMITS.timeout_seconds).outcomes
        for _ in range(max(0, runs - 1))
    ]
    stable, flaky, unselectable = split_flaky([first.outcomes, *later], node_file_exists(repo))
    return Baseline(
        len(first.outcomes), stable, flaky, unselectable, first.collection_errors, first.seconds
    )


def _last_line(run: SuiteRun) -> str:
    """The line of pytest's output that says most: a missing module if one is named."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", run.log)  # some packages' configs turn on colour
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    missing = [line for line in lines if "No module named" in line]
    return (missing or lines or ["no output"])[-1]


@dataclasses.dataclass(frozen=True)
class _Context:
    """What every candidate of one run shares."""

    options: SynthOptions
    package: Package
    label: str  # NAME-VERSION: in draw keys and instance ids
    layout: Layout
    repo: str  # the unpacked sdist
    sandbox: object  # over a copy of `repo`; mutants are written into it and taken out again
    baseline: Baseline
    originals: Mapping[str, str]  # path -> text of each source file
    pool: Pool


def _candidates(ctx: _Context, seconds: dict[str, float], progress: bool | None):
    """Try keyed candidates until enough tasks are valid or the tries run out."""
    from swejax.progress import Report

    counts: Counter = Counter()
    records: list[dict] = []
    seen: set = set()
    timeout = max(30.0, 5 * ctx.baseline.seconds + 10)
    options = ctx.options
    # Counted in tasks kept: what was asked for (the tries can end it sooner).
    report = Report(f"synthesize {ctx.label}", options.max_tasks, "task", quiet=progress is False)
    for index in range(options.tries):
        if len(records) >= options.max_tasks:
            break
        mutations = draw(
            ctx.pool, keyed_rng(options.seed, ctx.label, index), options.two_file_share
        )
        key = tuple(sorted(m.key for m in mutations))
        if not mutations or key in seen:
            continue
        seen.add(key)
        counts["tried"] += 1
        mark = time.perf_counter()
        result = try_mutant(
            ctx.sandbox, ctx.layout, ctx.baseline, ctx.originals, mutations, timeout,
            options.max_fail,
        )  # fmt: skip
        seconds["mutants"] = seconds.get("mutants", 0.0) + time.perf_counter() - mark
        counts[result.verdict] += 1
        if result.verdict != "kept":
            continue
        mark = time.perf_counter()
        row = _valid_task(ctx, _bug(ctx, result, index))
        seconds["validation"] = seconds.get("validation", 0.0) + time.perf_counter() - mark
        if row is None:
            counts["invalid"] += 1
        else:
            records.append(row)
            report.advance()
    report.close()
    return records, counts


def _bug(ctx: _Context, result: MutantResult, index: int) -> Bug:
    """A kept mutant with its pass-to-pass tests and issue text (keyed draws of their own)."""
    seed, label = ctx.options.seed, ctx.label
    symptoms = [_issue.symptom(t, result.failures[t]) for t in result.failing]
    rng = keyed_rng(seed, label, index, "issue")
    chosen = _issue.pick_symptoms(symptoms, rng)
    forbidden = [*changed_lines(result.original, result.mutant), *result.mutant]
    text = _issue.problem_statement(ctx.package.requirement, chosen, rng, forbidden)
    p2p = pass_to_pass(
        ctx.baseline.passing, result.failing, ctx.options.max_pass_to_pass,
        keyed_rng(seed, label, index, "pass_to_pass"),
    )  # fmt: skip
    return Bug(index, result.original, result.mutant, result.failing, p2p, text)


def _valid_task(ctx: _Context, bug: Bug) -> dict | None:
    """Write the buggy repository and the record; keep them only if the gold patch resolves the
    task and the empty patch does not, as validate-tasks will check."""
    from swejax.env.grading import grade
    from swejax.tasks import task_from_record

    instance_id = f"swejax-synth__{ctx.label}-{bug.index}"
    destination = os.path.join(ctx.options.repos_dir, instance_id)
    write_buggy_repo(ctx.repo, destination, bug)
    out_folder = os.path.dirname(os.path.abspath(ctx.options.out))
    row = record(
        instance_id=instance_id,
        package=ctx.package.name,
        version=ctx.package.version,
        bug=bug,
        test_patch="",  # the package's own tests, unchanged, are the task's tests
        repo_dir=os.path.relpath(destination, out_folder),
        test_command=ctx.layout.test_command,
    )
    task = task_from_record(row, instance_id, repo_dir=destination)
    gold, empty = grade(task, task.patch, "bwrap"), grade(task, "", "bwrap")
    problem = gold.infrastructure_error or empty.infrastructure_error
    if gold.resolved and not empty.resolved and not problem:
        return row
    logger.info(
        "%s: dropped (gold resolves: %s, empty resolves: %s) %s",
        instance_id, gold.resolved, empty.resolved, problem[:200],
    )  # fmt: skip
    shutil.rmtree(destination, ignore_errors=True)
    return None


def _report(options, package, layout, baseline, pool, counts, written, total, seconds) -> dict:
    tried = counts["tried"]
    sites = Counter(op for ops in pool.values() for op, s in ops.items() for _ in s)
    return {
        "package": package.requirement,
        "seed": options.seed,
        "out": options.out,
        "test_command": layout.test_command,
        "tests_found": baseline.found,
        "tests_passing": len(baseline.passing),
        "tests_flaky": len(baseline.flaky),
        "tests_unselectable": len(baseline.unselectable),
        "collection_errors": baseline.collection_errors,
        "source_files": len(layout.source_files),
        "mutation_sites": dict(sorted(sites.items())),
        "mutants_tried": tried,
        "mutants_kept": counts["kept"],
        "share_kept": round(counts["kept"] / tried, 3) if tried else 0.0,
        "dropped": {k: counts[k] for k in ("no_change", "no_test_failed", "too_many_failed",
                                           "broke_collection", "timed_out", "invalid")},
        "tasks_written": written,
        "seconds_total": round(total, 1),
        "seconds_per_task": round(total / written, 1) if written else None,
        "seconds_by_stage": {k: round(v, 1) for k, v in seconds.items()},
    }  # fmt: skip

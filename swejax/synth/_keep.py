"""Which mutants are kept: run the suite on each, compare with the baseline."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from swejax.synth._layout import Layout
from swejax.synth._mutate import Mutation, changes_the_program, mutant_source
from swejax.synth._suite import Baseline, SuiteRun, run_pytest

# A fixed hash seed while mutants run: the same failures print the same reprs of sets and dicts,
# so the issue text is the same for the same seed.
_MUTANT_ENV = "PYTHONHASHSEED=0 "


@dataclasses.dataclass(frozen=True)
class MutantResult:
    verdict: str  # "kept", or why it was dropped (no_change: it does not parse, or means the same)
    original: Mapping[str, str]  # path -> text of the mutated files
    mutant: Mapping[str, str]
    failing: tuple[str, ...] = ()  # stable tests that fail on the mutant
    failures: Mapping[str, str] = dataclasses.field(default_factory=dict)  # their report texts


def mutated_files(originals: Mapping[str, str], mutations: Sequence[Mutation]) -> dict[str, str]:
    """path -> text with the mutations in (they never overlap: at most one per file)."""
    mutant: dict[str, str] = {}
    for m in mutations:
        data = mutant.get(m.path, originals[m.path]).encode("utf-8")
        mutant[m.path] = mutant_source(data, m).decode("utf-8")
    return mutant


def try_mutant(
    sandbox,
    layout: Layout,
    baseline: Baseline,
    originals: Mapping[str, str],
    mutations: Sequence[Mutation],
    timeout: float,
    max_fail: int,
) -> MutantResult:
    """Run the whole suite on the mutant in the sandbox's copy; the files are put back after."""
    mutant = mutated_files(originals, mutations)
    original = {path: originals[path] for path in mutant}
    if not all(changes_the_program(original[p].encode(), mutant[p].encode()) for p in mutant):
        return MutantResult("no_change", original, mutant)
    try:
        for path, text in mutant.items():
            sandbox.write_file(path, text)
        run = run_pytest(sandbox, _MUTANT_ENV + layout.test_command, layout.test_paths, timeout)
    finally:
        for path in mutant:
            sandbox.write_file(path, originals[path])
    failing = failing_tests(run, baseline)
    failures = {t: run.failures.get(t, "") for t in failing}
    return MutantResult(judge(run, baseline, max_fail), original, mutant, failing, failures)


def failing_tests(run: SuiteRun, baseline: Baseline) -> tuple[str, ...]:
    return tuple(t for t in baseline.passing if run.outcomes.get(t) in ("failed", "error"))


def judge(run: SuiteRun, baseline: Baseline, max_fail: int) -> str:
    """ "kept" for a mutant that fails between 1 and `max_fail` stable tests and breaks nothing
    else; otherwise why not. A stable test missing from the report means its module no longer
    imports: collection broke."""
    if run.timed_out:
        return "timed_out"
    if not run.ran or run.collection_errors > baseline.collection_errors:
        return "broke_collection"
    if any(t not in run.outcomes for t in baseline.passing):
        return "broke_collection"
    failing = failing_tests(run, baseline)
    if not failing:
        return "no_test_failed"
    return "too_many_failed" if len(failing) > max_fail else "kept"

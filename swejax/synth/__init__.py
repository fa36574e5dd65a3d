"""Synthesized tasks: SWE-bench-style bugs injected into a real package's sdist (docs/synthesis.md).

    from swejax.synth import SynthOptions, synthesize
    report = synthesize(SynthOptions("inflection==0.5.1", "tasks.jsonl", max_tasks=5))

Stages, each in its own module: `_fetch` (pip download, unpack), `_layout` (code, tests, import
root), `_suite` (pytest in the sandbox, the flaky filter), `_mutate` (AST mutation operators),
`_draw` (keyed draws), `_keep` (which mutants are kept), `_issue` (problem statements),
`_patch` (diffs), `_records` (records, repositories) and `_synthesize` (the pipeline, its
report).
"""

from swejax.synth._fetch import Package, parse_requirement
from swejax.synth._mutate import OPERATORS, Edit, Mutation, find_mutations, mutant_source
from swejax.synth._synthesize import SynthOptions, synthesize

__all__ = [
    "OPERATORS",
    "Edit",
    "Mutation",
    "Package",
    "SynthOptions",
    "find_mutations",
    "mutant_source",
    "parse_requirement",
    "synthesize",
]

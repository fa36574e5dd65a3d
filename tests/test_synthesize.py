"""The synthesize mode: mutation operators, keyed draws, the flaky filter, issue text, records,
and one run from the command line on a real package (needs PyPI, as CI has)."""

from __future__ import annotations

import ast
import importlib.util
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from swejax.env.sandbox import bwrap_available
from swejax.errors import UserError
from swejax.main import main
from swejax.synth import _issue, find_mutations, mutant_source
from swejax.synth._draw import draw, keyed_rng
from swejax.synth._issue import TEMPLATES, pick_symptoms, problem_statement, symptom
from swejax.synth._keep import judge
from swejax.synth._layout import find_layout
from swejax.synth._patch import file_diff
from swejax.synth._suite import Baseline, SuiteRun, split_flaky
from swejax.synth._synthesize import SynthOptions, synthesize
from swejax.tasks import builtin_tasks, load_jsonl

REPO = Path(__file__).resolve().parents[1]
needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="needs bubblewrap")


# --- mutation operators ---------------------------------------------------------------------

# (operator, source, a line the mutant must contain). Odd spacing elsewhere must survive.
OPERATOR_CASES = [
    ("compare", "def f(a, b):\n    return a < b  # why\n", "    return a <= b  # why\n"),
    ("compare", "def f(a, b):\n    return a == b\n", "    return a != b\n"),
    ("compare", "def f(a, b):\n    return a in b\n", "    return a not in b\n"),
    ("boolean", "def f(a, b, c):\n    return a and b and c\n", "    return a or b or c\n"),
    ("not", "def f(a):\n    return not a\n", "    return a\n"),
    ("off_by_one", "def f(xs):\n    return [x for x in range(len(xs))]\n", "range(len(xs) + 1)"),
    ("off_by_one", "def f(xs):\n    return xs[len(xs) - 1]\n", "    return xs[len(xs)]\n"),
    ("off_by_one", "def f(xs, n):\n    return xs[:n]\n", "    return xs[:n + 1]\n"),
    (
        "drop_if",
        "def f(x):\n    if x < 0:\n        x = 0\n    return x\n",
        "def f(x):\n    return x",
    ),
    (
        "drop_else",
        "def f(x):\n    if x:\n        y = 1\n    else:\n        y = 2\n    return y\n",
        "        y = 1\n    return y\n",
    ),
    (
        "drop_return",
        "def f(x):\n    if x:\n        x += 1\n        return 1\n    return 2\n",
        "        x += 1\n    return 2\n",
    ),
    ("default", "def f(x, n=2, *, flag=True):\n    return x\n", "flag=False"),
    ("default", "def f(x, n=2, *, flag=True):\n    return x\n", "n=3"),
    ("swap_args", "def f(a, b):\n    return g(a,  b)\n", "    return g(b,  a)\n"),
]


def _git(cwd: Path, *args: str) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    subprocess.run(git, cwd=cwd, check=True, capture_output=True)


@pytest.mark.parametrize(("operator", "source", "expected"), OPERATOR_CASES)
def test_operator_mutates_and_the_gold_patch_restores(operator, source, expected, tmp_path):
    prefix = "import os\nCONFIG  =  {'a':1}   # kept as written\n\n"
    original = prefix + source
    found = find_mutations("pkg/mod.py", original.encode())
    assert operator in found
    mutants = [mutant_source(original.encode(), m).decode() for m in found[operator]]
    mutant = next((m for m in mutants if expected in m), None)
    assert mutant is not None, (expected, mutants)
    assert mutant != original and mutant.startswith(prefix)  # the rest keeps its formatting
    ast.parse(mutant)
    # The buggy tree in git, the gold patch applied with git apply: the original again.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(mutant)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "buggy")
    patch = file_diff("pkg/mod.py", mutant, original)
    assert patch.startswith("diff --git a/pkg/mod.py b/pkg/mod.py\n")
    (tmp_path / "gold.patch").write_text(patch)
    _git(tmp_path, "apply", "gold.patch")
    assert (tmp_path / "pkg" / "mod.py").read_text() == original


def test_only_code_inside_functions_is_mutated():
    assert find_mutations("m.py", b"LIMIT = 3 < 4 and not DEBUG\nITEMS = range(10)\n") == {}
    assert find_mutations("m.py", b"def f(:\n") == {}  # does not parse: nothing to mutate


def test_gold_patch_marks_a_last_line_without_newline(tmp_path):
    original, mutant = "def f(a):\n    return a < 1", "def f(a):\n    return a <= 1"
    (tmp_path / "m.py").write_text(mutant)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "buggy")
    (tmp_path / "gold.patch").write_text(file_diff("m.py", mutant, original))
    _git(tmp_path, "apply", "gold.patch")
    assert (tmp_path / "m.py").read_text() == original


# --- keyed draws ----------------------------------------------------------------------------

POOL_SOURCES = {
    "pkg/a.py": "def f(a, b):\n    if a < b and not a:\n        return g(a, b)\n    return a[0]\n",
    "pkg/b.py": "def h(x, n=1):\n    return [x == i for i in range(n)]\n",
}


def _pool():
    return {p: find_mutations(p, s.encode()) for p, s in POOL_SOURCES.items()}


def test_draws_are_keyed_by_seed_package_and_index():
    pool = _pool()
    first = [draw(pool, keyed_rng(0, "pkg-1.0", i), 0.25) for i in range(20)]
    again = [draw(pool, keyed_rng(0, "pkg-1.0", i), 0.25) for i in range(20)]
    assert first == again
    # A candidate's draw does not depend on the ones before it.
    assert draw(pool, keyed_rng(0, "pkg-1.0", 7), 0.25) == first[7]
    other_seed = [draw(pool, keyed_rng(1, "pkg-1.0", i), 0.25) for i in range(20)]
    other_package = [draw(pool, keyed_rng(0, "pkg-2.0", i), 0.25) for i in range(20)]
    assert first != other_seed and first != other_package


def test_two_mutations_go_to_two_files():
    pool = _pool()
    for index in range(10):
        mutations = draw(pool, keyed_rng(0, "pkg", index), two_file_share=1.0)
        assert len(mutations) == 2 and mutations[0].path != mutations[1].path
    single = {"pkg/a.py": pool["pkg/a.py"]}
    assert len(draw(single, keyed_rng(0, "pkg", 0), two_file_share=1.0)) == 1


# --- the suite: flaky tests, which mutants are kept ------------------------------------------


def test_flaky_filter_keeps_only_tests_that_pass_every_run():
    first = {"t.py::a": "passed", "t.py::b": "passed", "t.py::c": "passed", "t.py::d": "failed"}
    first["t.py::e"] = "passed"
    later = [
        {"t.py::a": "passed", "t.py::b": "failed", "t.py::c": "passed"},
        {"t.py::a": "passed", "t.py::b": "passed", "t.py::c": "passed"},
    ]
    stable, flaky, unselectable = split_flaky([first, *later])
    assert stable == ("t.py::a", "t.py::c")
    assert flaky == ("t.py::b",)
    assert unselectable == ("t.py::e",)  # passed, but never when named by its id
    stable, _, unselectable = split_flaky([first, *later], exists=lambda n: n != "t.py::c")
    assert stable == ("t.py::a",) and "t.py::c" in unselectable


def _run(outcomes, exit_code=1, collection_errors=0, timed_out=False):
    return SuiteRun(outcomes, {}, collection_errors, exit_code, timed_out, 0.1, "")


def test_judge_keeps_mutants_that_fail_a_few_tests_and_break_nothing_else():
    baseline = Baseline(4, ("t.py::a", "t.py::b", "t.py::c"), (), (), 0, 0.1)
    passed = dict.fromkeys(baseline.passing, "passed")
    assert judge(_run({**passed, "t.py::b": "failed"}), baseline, max_fail=1) == "kept"
    assert judge(_run({**passed, "t.py::b": "error"}), baseline, max_fail=1) == "kept"
    assert judge(_run(passed, exit_code=0), baseline, 1) == "no_test_failed"
    two = {**passed, "t.py::a": "failed", "t.py::b": "failed"}
    assert judge(_run(two), baseline, max_fail=1) == "too_many_failed"
    assert judge(_run({"t.py::a": "failed"}), baseline, 1) == "broke_collection"  # b, c gone
    assert judge(_run(two, collection_errors=1), baseline, 5) == "broke_collection"
    assert judge(_run(two, exit_code=2), baseline, 5) == "broke_collection"
    assert judge(_run(two, timed_out=True), baseline, 5) == "timed_out"


def test_layout_finds_src_code_and_test_folders(tmp_path):
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "__init__.py").write_text("def f():\n    return 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_f.py").write_text("def test_f():\n    pass\n")
    (tmp_path / "setup.py").write_text("")
    layout = find_layout(str(tmp_path))
    assert layout.import_root == "src" and layout.test_paths == ("tests",)
    assert layout.source_files == ("src/pkg/__init__.py",)
    assert "PYTHONPATH=src " in layout.test_command
    (tmp_path / "tests" / "test_f.py").unlink()
    with pytest.raises(UserError, match="no tests found"):
        find_layout(str(tmp_path))


# --- issue text -----------------------------------------------------------------------------

# pytest's JUnit text for a failure raised inside the package: its frames quote package code.
RAISED = """\
camel = 'ApplicationController', underscore = 'application_controller'

    @pytest.mark.parametrize(("camel", "underscore"), CAMEL_TO_UNDERSCORE)
    def test_camelize(camel, underscore):
>       assert camel == inflection.camelize(underscore)

test_inflection.py:344:
_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _
inflection/__init__.py:168: in camelize
    return string[0].lower() + camelize(string)[1:]
E   RecursionError: maximum recursion depth exceeded while calling a Python object
!!! Recursion detected (same locals & position)"""

WRONG_VALUE = """\
some_string = '!@#Leading bad characters'
parameterized_string = 'leading-bad-characters'

    @pytest.mark.parametrize(
        ("some_string", "parameterized_string"),
        STRING_TO_PARAMETERIZED
    )
    def test_parameterize(some_string, parameterized_string):
>       assert parameterized_string == inflection.parameterize(some_string)
E       AssertionError: assert 'leading-bad-characters' == '-leading-bad-characters'
E         - -leading-bad-characters
E         ? -
E         + leading-bad-characters

test_inflection.py:368: AssertionError"""


# The same, as pytest writes it for a comparison of numbers (no exception name in front).
PLAIN = """\
x = 12, want = 10

    @pytest.mark.parametrize(("x", "want"), [(-3, 0), (12, 10)])
    def test_clamp(x, want):
>       assert clamp(x) == want
E       assert 9 == 10
E        +  where 9 = clamp(12)

tests/test_tiny.py:7: AssertionError"""


UNITTEST = """\
self = <tests.test_idna.IDNATests testMethod=test_valid_contexto>

    def test_valid_contexto(self):
        latin_l = '\\u006c'
>       self.assertFalse(idna.valid_contexto(latin_l, 0))
E       AssertionError: True is not false

tests/test_idna.py:80: AssertionError"""


# A unittest-style failure raised two frames down, inside the package; then one whose only
# long frame is the package's (pytest pruned the test's).
DEEP = """\
self = <tests.test_x.T testMethod=test_a>

    def test_a(self):
>       self.assertEqual(pkg.f(1), 2)

tests/test_x.py:5:
_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _
<frozen codecs>:239: in encode
    ???
pkg/mod.py:9: in f
    return secret_helper(x)
_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _

x = 1

    def secret_helper(x):
>       return x[0]
E       TypeError: 'int' object is not subscriptable

pkg/mod.py:3: TypeError"""
PACKAGE_ONLY = DEEP.split(
    "_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _"
)[-1]


def test_symptoms_come_from_the_test_s_frame_only():
    deep = symptom("tests/test_x.py::T::test_a", DEEP)
    assert deep.snippet == ("self.assertEqual(pkg.f(1), 2)",)
    assert deep.call == "pkg.f(1)" and deep.expected == "2" and deep.kind == "TypeError"
    alone = symptom("tests/test_x.py::T::test_a", PACKAGE_ONLY)
    assert alone.snippet == () and alone.call == ""
    assert alone.error == ("TypeError: 'int' object is not subscriptable",)
    for template in TEMPLATES:
        text = template("pkg==1", [alone, deep])
        assert "secret_helper" not in text and "x[0]" not in text and "pkg/mod.py" not in text


def test_symptoms_name_the_call_and_the_values():
    unit = symptom("tests/test_idna.py::IDNATests::test_valid_contexto", UNITTEST)
    assert (unit.call, unit.actual, unit.expected) == (
        "idna.valid_contexto(latin_l, 0)",
        "True",
        "False",
    )
    assert unit.snippet == (
        "latin_l = '\\u006c'",
        "self.assertFalse(idna.valid_contexto(latin_l, 0))",
    )
    plain = symptom("tests/test_tiny.py::test_clamp[12-10]", PLAIN)
    assert (plain.call, plain.actual, plain.expected) == ("clamp(12)", "9", "10")
    assert plain.snippet == ("x = 12", "want = 10", "assert clamp(x) == want")
    wrong = symptom("t.py::test_parameterize[x]", WRONG_VALUE)
    assert wrong.call == "inflection.parameterize('!@#Leading bad characters')"
    assert wrong.actual == "'-leading-bad-characters'"
    assert wrong.expected == "'leading-bad-characters'"
    raised = symptom("t.py::test_camelize[x]", RAISED)
    assert raised.kind == "RecursionError" and raised.actual == ""
    assert raised.call == "inflection.camelize('application_controller')"
    assert raised.expected == "'ApplicationController'"


@pytest.mark.parametrize(
    ("call", "named"),
    [
        ("list(merge_sorted([1], key=lambda x: -x))", "merge_sorted"),
        ('b"".join(codecs.iterencode(text, "idna"))', "codecs.iterencode"),
        ("inflection.camelize('a_b')", "inflection.camelize"),
        ("list(items)", "list"),
    ],
)
def test_titles_name_the_package_s_function_not_a_wrapper(call, named):
    title = _issue._title(_issue.Symptom("t.py::t", (), ("KeyError: 'a'",), call), "pkg==1")
    assert title == f"`{named}` raises KeyError"


@pytest.mark.parametrize("template", TEMPLATES)
def test_issue_text_never_quotes_the_mutated_code(template):
    mutated = "return string[0].lower() + camelize(string)[1:]"
    symptoms = [symptom("t.py::test_camelize[x]", RAISED), symptom("t.py::p[y]", WRONG_VALUE)]
    text = template("inflection==0.5.1", symptoms)
    assert "RecursionError" in text and "inflection.camelize" in text
    assert mutated not in text and "inflection/__init__.py" not in text
    # A line that quotes a changed line is dropped, even when the test itself holds it.
    rng = random.Random(0)
    forbidden = ["inflection.parameterize(some_string)"]
    statement = problem_statement("inflection==0.5.1", symptoms, rng, forbidden)
    assert forbidden[0] not in statement and "RecursionError" in statement


def test_issue_text_is_keyed():
    symptoms = [symptom("t.py::test_camelize[x]", RAISED), symptom("t.py::p[y]", WRONG_VALUE)]

    def text(seed: int) -> str:
        rng = keyed_rng(seed, "inflection-0.5.1", 3, "issue")
        return problem_statement("inflection", pick_symptoms(symptoms, rng), rng)

    assert text(0) == text(0)
    assert len({text(seed) for seed in range(12)}) > 1  # the templates differ


# --- whole runs -----------------------------------------------------------------------------

TINY_MODULE = """\
def clamp(x, low=0, high=10):
    if x < low:
        return low
    if x > high:
        return high
    return x


def count_even(xs):
    n = 0
    for i in range(len(xs)):
        if xs[i] % 2 == 0 and xs[i] >= 0:
            n += 1
    return n
"""
TINY_TESTS = """\
import pytest
from tiny import clamp, count_even


@pytest.mark.parametrize(("x", "want"), [(-3, 0), (0, 0), (4, 4), (10, 10), (12, 10)])
def test_clamp(x, want):
    assert clamp(x) == want


def test_clamp_bounds():
    assert clamp(5, 6, 8) == 6


def test_count_even():
    assert count_even([1, 2, 3, 4, -2, 0]) == 3


def test_count_even_empty():
    assert count_even([]) == 0
"""


def _tiny_sdist(root: Path, with_tests: bool = True) -> Path:
    sdist = root / "tiny-1.0"
    (sdist / "tiny").mkdir(parents=True)
    (sdist / "tiny" / "__init__.py").write_text(TINY_MODULE)
    if with_tests:
        (sdist / "tests").mkdir()
        (sdist / "tests" / "test_tiny.py").write_text(TINY_TESTS)
    return sdist


@needs_bwrap
@pytest.mark.slow
def test_same_seed_same_tasks_other_seed_other_tasks(tmp_path):
    sdist = _tiny_sdist(tmp_path)

    def run(name: str, seed: int) -> list[dict]:
        out = tmp_path / name / "tasks.jsonl"
        options = SynthOptions("tiny==1.0", str(out), max_tasks=2, seed=seed, sdist=str(sdist))
        report = synthesize(options, progress=False)
        assert report["tasks_written"] == 2 and report["tests_passing"] == 8
        tasks = load_jsonl(str(out))
        assert all(Path(t.repo_dir).is_dir() for t in tasks)
        assert tasks[0].test_command == "PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=. " + (
            "python3 -m pytest -rA -p no:cacheprovider"
        )
        return [json.loads(line) for line in out.read_text().splitlines()]

    first, again, other = run("a", 0), run("b", 0), run("c", 5)
    assert first == again
    assert [r["patch"] for r in first] != [r["patch"] for r in other]
    for r in first:
        assert r["repo_dir"] == f"tasks.repos/{r['instance_id']}"
        assert r["FAIL_TO_PASS"] and not set(r["FAIL_TO_PASS"]) & set(r["PASS_TO_PASS"])
        for line in r["patch"].splitlines():
            if line[:1] in "+-" and line[:3] not in ("+++", "---") and len(line.strip()) > 9:
                assert line[1:].strip() not in r["problem_statement"]


def _one_error_line(captured) -> str:
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swejax: error: "), captured.err
    return lines[0]


@needs_bwrap
def test_no_tests_and_bad_requirements_are_one_line_errors(tmp_path, capsys):
    out = str(tmp_path / "tasks.jsonl")
    assert main(["synthesize", "--package", "inflection", "--out", out]) == 2
    assert "NAME==VERSION" in _one_error_line(capsys.readouterr())
    sdist = str(_tiny_sdist(tmp_path, with_tests=False))
    assert main(["synthesize", "--package", "tiny==1.0", "--sdist", sdist, "--out", out]) == 2
    assert "no tests found" in _one_error_line(capsys.readouterr())


def _build_images():
    spec = importlib.util.spec_from_file_location("build_images", REPO / "tools/build_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_images_reads_a_synthesized_set(tmp_path):
    tools = _build_images()
    _tiny_sdist(tmp_path / "tasks.repos")
    record = {
        "instance_id": "swejax-synth__tiny-1.0-0",
        "repo": "pypi/tiny",
        "base_commit": "base",
        "problem_statement": "x",
        "patch": "",
        "test_patch": "",
        "FAIL_TO_PASS": [],
        "PASS_TO_PASS": [],
        "repo_dir": "tasks.repos/tiny-1.0",
    }
    image_only = {**record, "instance_id": "octo__lib-1", "repo_dir": "", "image_name": "x"}
    jsonl = tmp_path / "tasks.jsonl"
    jsonl.write_text(json.dumps(record) + "\n" + json.dumps(image_only) + "\n")
    (task,) = tools.tasks_to_build(str(jsonl), "")
    assert task.instance_id == record["instance_id"] and Path(task.repo_dir).is_dir()
    with pytest.raises(ValueError, match="unknown task ids"):
        tools.tasks_to_build(str(jsonl), "nope")
    jsonl.write_text(json.dumps(image_only) + "\n")
    with pytest.raises(ValueError, match="no task with a repo_dir"):
        tools.tasks_to_build(str(jsonl), "")
    assert tools.tasks_to_build("", "") == builtin_tasks()


@needs_bwrap
@pytest.mark.slow
def test_synthesize_a_real_package_then_validate_it(tmp_path):
    """From the command line, as a user runs it: a small pure-Python package from PyPI."""
    out = tmp_path / "tasks.jsonl"
    python = [sys.executable, "-m", "swejax.main"]
    made = subprocess.run(
        [*python, "synthesize", "--package", "inflection==0.5.1", "--max-tasks", "2"]
        + ["--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    assert "2 tasks written" in made.stdout
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["tests_passing"] > 400 and report["tasks_written"] == 2
    assert 2 <= report["mutants_kept"] <= report["mutants_tried"]
    tasks = load_jsonl(str(out))
    assert [t.instance_id.rsplit("-", 1)[0] for t in tasks] == [
        "swejax-synth__inflection-0.5.1"
    ] * 2
    assert all(t.test_patch == "" and 0 < len(t.FAIL_TO_PASS) <= 30 for t in tasks)
    checked = subprocess.run(
        [*python, "validate-tasks", "--tasks", str(out), "--runtime", "bwrap"]
        + ["--report", str(tmp_path / "valid.json")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr[-3000:]
    assert "2 of 2 tasks valid" in checked.stdout


def test_the_mode_is_listed(capsys):
    assert main(["--help"]) == 0
    assert "\n  synthesize " in capsys.readouterr().out
    sample = textwrap.dedent(TINY_MODULE)
    assert find_mutations("tiny/__init__.py", sample.encode())  # the tiny package has sites

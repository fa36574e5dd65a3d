"""Grading built-in tasks in the bubblewrap sandbox, honest and forged submissions."""

import dataclasses
import os
import subprocess

import pytest

from swejax.env.grading import filter_submission, grade
from swejax.env.sandbox import bwrap_available
from swejax.tasks import builtin_tasks

_READY = (
    bwrap_available()
    and subprocess.run(["/usr/bin/python3", "-c", "import pytest"], capture_output=True).returncode
    == 0
)
if not _READY:
    if os.environ.get("CI"):
        raise RuntimeError("CI must install bubblewrap and python3-pytest (see .ci/run)")
    pytest.skip("needs bubblewrap and the system python3 with pytest", allow_module_level=True)

TASKS = builtin_tasks()
BY_ID = {t.instance_id: t for t in TASKS}


@pytest.mark.parametrize("task", TASKS, ids=[t.instance_id for t in TASKS])
def test_gold_resolves_and_empty_does_not(task):
    gold = grade(task, task.patch)
    assert gold.resolved, gold.outcomes
    assert gold.dropped_files == () and not gold.infrastructure_error
    empty = grade(task, "")
    assert not empty.resolved and not empty.infrastructure_error
    assert all(empty.outcomes[t] in ("failed", "error") for t in task.FAIL_TO_PASS)


def test_a_wrong_edit_is_not_resolved():
    task = BY_ID["swejax__a_median_even_length"]
    # The gold patch's added line, edited wrongly: divide the upper middle value only.
    fixed = "+    return (data[mid - 1] + data[mid]) / 2\n"
    assert fixed in task.patch, "fixture assumption: the gold patch's added line"
    wrong = task.patch.replace(fixed, "+    return data[mid - 1] + data[mid] / 2\n")
    result = grade(task, wrong)
    assert result.patch_applied and not result.resolved


def _new_file_patch(path: str, text: str) -> str:
    lines = text.splitlines()
    body = "".join(f"+{line}\n" for line in lines)
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
        f"@@ -0,0 +1,{len(lines)} @@\n{body}"
    )


def test_forged_results_earn_nothing():
    task = BY_ID["swejax__b_roman_repeat"]
    forge = _new_file_patch(
        "conftest.py",
        "import pytest\n"
        "@pytest.hookimpl(hookwrapper=True)\n"
        "def pytest_runtest_makereport(item, call):\n"
        "    outcome = yield\n"
        "    outcome.get_result().outcome = 'passed'\n",
    )
    result = grade(task, forge)
    assert not result.resolved and result.dropped_files == ("conftest.py",)
    # Deleting or rewriting the tests is dropped too: the test patch and tests stay as given.
    test_file = task.test_files[0]
    kept, dropped = filter_submission(
        f"diff --git a/{test_file} b/{test_file}\ndeleted file mode 100644\n", task
    )
    assert kept == "" and dropped == (test_file,)


def test_patch_that_does_not_apply_and_a_broken_harness():
    task = BY_ID["swejax__a_semver_prerelease"]
    bogus = _new_file_patch("x.py", "a = 1\n").replace("new file mode", "deleted file mode")
    result = grade(task, bogus)
    assert not result.patch_applied and not result.resolved and not result.infrastructure_error
    broken = dataclasses.replace(
        task,
        test_patch="diff --git a/tests/nope.py b/tests/nope.py\n"
        "--- a/tests/nope.py\n+++ b/tests/nope.py\n@@ -1 +1 @@\n-x\n+y\n",
    )
    result = grade(broken, task.patch)
    assert not result.resolved and "test patch does not apply" in result.infrastructure_error


def test_a_runner_that_cannot_start_is_an_infrastructure_error():
    task = dataclasses.replace(
        BY_ID["swejax__a_semver_prerelease"], test_command="python3 -m no_such_test_runner"
    )
    result = grade(task, task.patch)
    assert not result.resolved and "test runner does not start" in result.infrastructure_error


def test_validate_tasks_mode_reports_each_task(tmp_path, capsys):
    import json

    from swejax.main import main

    report = tmp_path / "report.json"
    ids = ["swejax__a_semver_prerelease", "swejax__b_paginator"]
    code = main(["validate-tasks", *(f"--only={i}" for i in ids), f"--report={report}"])
    assert code == 0
    assert "2 of 2 tasks valid" in capsys.readouterr().out
    rows = json.loads(report.read_text())["tasks"]
    assert [r["instance_id"] for r in rows] == ids
    assert all(r["gold_resolved"] and r["empty_resolved"] is False for r in rows)

    # A SWE-rebench record runs in its docker image; bubblewrap cannot run it: invalid, reported.
    record = {
        "instance_id": "octo__lib-1",
        "repo": "octo/lib",
        "base_commit": "abc",
        "problem_statement": "x",
        "patch": "",
        "test_patch": "",
        "FAIL_TO_PASS": ["t"],
        "PASS_TO_PASS": [],
        "image_name": "swerebench/octo",
    }
    jsonl = tmp_path / "tasks.jsonl"
    jsonl.write_text(json.dumps(record) + "\n")
    assert main(["validate-tasks", f"--tasks={jsonl}", f"--report={report}"]) == 1
    (row,) = json.loads(report.read_text())["tasks"]
    assert not row["valid"] and "no local repository" in row["error"]


def test_swebench_log_parser_grading():
    pytest.importorskip("swebench.harness.log_parsers")
    task = dataclasses.replace(BY_ID["swejax__b_roman_repeat"], log_parser="parse_log_pytest")
    gold = grade(task, task.patch)
    assert gold.resolved and set(gold.outcomes.values()) == {"passed"}, gold.log
    empty = grade(task, "")
    assert not empty.resolved and "failed" in empty.outcomes.values()
    unknown = grade(dataclasses.replace(task, log_parser="no_such_parser"), task.patch)
    assert "no log parser named 'no_such_parser'" in unknown.infrastructure_error


def test_a_log_that_claims_success_while_the_run_failed_is_not_trusted():
    pytest.importorskip("swebench.harness.log_parsers")
    from swejax.env.swebench_logs import parse_test_log

    task = dataclasses.replace(BY_ID["swejax__b_roman_repeat"], log_parser="parse_log_pytest")
    assert parse_test_log(task, "PASSED t::a", exit_code=0) == {"t::a": "passed"}
    assert parse_test_log(task, "PASSED t::a", exit_code=1) == {}
    assert parse_test_log(task, "PASSED t::a\nFAILED t::b", exit_code=1) == {
        "t::a": "passed",
        "t::b": "failed",
    }


def test_swebench_missing_is_an_infrastructure_error(monkeypatch):
    import sys

    for module in ("swebench.harness.grading", "swebench.harness.log_parsers"):
        monkeypatch.setitem(sys.modules, module, None)
    task = dataclasses.replace(BY_ID["swejax__b_roman_repeat"], log_parser="parse_log_pytest")
    result = grade(task, task.patch)
    assert not result.resolved and "pip install 'swejax[swebench]'" in result.infrastructure_error


# --- protected paths of swejax's own tasks ----------------------------------------------------


def _edit_patch(path: str, old_start: int, before: list[str], after: list[str]) -> str:
    """A one-hunk diff of `path` replacing lines `before` (from line old_start) by `after`."""
    body = "".join(f"-{line}\n" for line in before) + "".join(f"+{line}\n" for line in after)
    return (
        f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n"
        f"@@ -{old_start},{len(before)} +{old_start},{len(after)} @@\n{body}"
    )


SETUP_CFG = "[metadata]\nname = calc\n\n[tool:pytest]\naddopts = -q\n\n[flake8]\nmax = 1\n"
PYPROJECT = (
    '[project]\nname = "calc"\ndependencies = []\n\n'
    '[tool.pytest.ini_options]\naddopts = "-q"\n\n[tool.ruff]\nline-length = 90\n'
)


@pytest.fixture
def own_task(tmp_path):
    (tmp_path / "pkg" / "tests").mkdir(parents=True)
    (tmp_path / "setup.cfg").write_text(SETUP_CFG)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    return dataclasses.replace(
        BY_ID["swejax__b_roman_repeat"],
        repo_dir=str(tmp_path),
        test_patch=_new_file_patch("pkg/tests/test_new.py", "def test_new():\n    pass\n"),
        FAIL_TO_PASS=("pkg/tests/test_new.py::test_new",),
        PASS_TO_PASS=("pkg/tests/test_old.py::TestOld::test_x[1-2]", "plain_name"),
    )


def test_protected_paths_are_the_tests_and_how_they_run(own_task):
    def dropped(patch):
        return filter_submission(patch, own_task)[1]

    # The test patch's files, the files of listed tests, pytest's runner files anywhere.
    for path in ("pkg/tests/test_new.py", "pkg/tests/test_old.py", "deep/conftest.py",
                 "pytest.ini", ".pytest.ini", "tox.ini", "pkg/sitecustomize.py"):  # fmt: skip
        assert dropped(_new_file_patch(path, "x = 1\n")) == (path,), path
    # Not every file under a tests folder, nor every test_* name: fixes sometimes touch them.
    for path in ("pkg/tests/helpers.py", "pkg/tests/test_other.py", "test_util.py"):
        assert dropped(_new_file_patch(path, "x = 1\n")) == (), path


def test_setup_cfg_and_pyproject_are_protected_only_where_they_configure_pytest(own_task):
    def dropped(patch):
        return filter_submission(patch, own_task)[1]

    assert dropped(_edit_patch("setup.cfg", 2, ["name = calc"], ["name = calc2"])) == ()
    assert dropped(_edit_patch("setup.cfg", 8, ["max = 1"], ["max = 2"])) == ()
    assert dropped(_edit_patch("setup.cfg", 5, ["addopts = -q"], ["addopts = -p forge"])) == (
        "setup.cfg",
    )
    # A line added at the end of the pytest section belongs to it.
    assert dropped(_edit_patch("setup.cfg", 5, ["addopts = -q"], ["addopts = -q", "x = 1"])) == (
        "setup.cfg",
    )
    deps = _edit_patch("pyproject.toml", 3, ["dependencies = []"], ['dependencies = ["attrs"]'])
    assert dropped(deps) == ()
    assert (
        dropped(_edit_patch("pyproject.toml", 10, ["line-length = 90"], ["line-length = 9"])) == ()
    )
    assert dropped(_edit_patch("pyproject.toml", 6, ['addopts = "-q"'], ['addopts = "-x"'])) == (
        "pyproject.toml",
    )
    # A new pytest table, or a dotted key, anywhere: the changed line names pytest.
    added = _edit_patch("pyproject.toml", 10, ["line-length = 90"], ["line-length = 90", "",
                        "[tool.pytest]", 'addopts = ["-p", "forge"]'])  # fmt: skip
    assert dropped(added) == ("pyproject.toml",)
    # Without the base file to look at, any change to them is kept out.
    blind = dataclasses.replace(own_task, repo_dir="")
    assert filter_submission(deps, blind)[1] == ("pyproject.toml",)


def test_the_task_family_tool_writes_tasks_whose_gold_alone_resolves_its_own_test(tmp_path):
    """tools/task_family.py (the one-decision tasks of docs/stability.md): each gold patch
    resolves its task and no other, and the base resolves none."""
    import sys

    from swejax.tasks import load_jsonl

    tool = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools", "task_family.py")
    done = subprocess.run(
        [sys.executable, tool, str(tmp_path), "--size=3"],
        capture_output=True,
        text=True,
        check=True,
    )
    tasks = load_jsonl(done.stdout.strip())
    assert [t.instance_id for t in tasks] == [f"family__attempts_{n}" for n in (2, 3, 4)]
    assert len({t.problem_statement for t in tasks}) == 3
    for task in tasks:
        assert [grade(task, other.patch).resolved for other in tasks] == [
            other is task for other in tasks
        ], task.instance_id
        assert not grade(task, "").resolved

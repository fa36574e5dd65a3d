"""The SWE-bench family graded as its harness grades it (swejax.env.harness), against swebench
4.1.0 itself: eval scripts of the real Verified-50 records, the parser per repository, and
resolution on real test logs (tests/data/harness_logs, made by make_logs.py there) compared with
swebench's get_eval_report; the SWE-rebench path; the activated shell; the history rule."""

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("swebench.harness.grading")

from swebench.harness import grading as sb_grading  # noqa: E402
from swebench.harness.constants import MAP_REPO_VERSION_TO_SPECS  # noqa: E402
from swebench.harness.log_parsers import MAP_REPO_TO_PARSER  # noqa: E402
from swebench.harness.log_parsers import python as sb_parsers  # noqa: E402
from swebench.harness.test_spec import test_spec as sb_test_spec  # noqa: E402

from swejax.env import _task_sandbox, harness  # noqa: E402
from swejax.env.grading import eval_script, grade  # noqa: E402
from swejax.env.harness import Harness, HarnessError  # noqa: E402
from swejax.env.harness import _grade as harness_grade  # noqa: E402
from swejax.tasks import VERIFIED_50, builtin_tasks, load_jsonl, task_from_record  # noqa: E402

DATA = Path(__file__).parent / "data"
VERIFIED = DATA / "swebench_verified_50.jsonl"
LOGS = DATA / "harness_logs"
TASKS = {t.instance_id: t for t in load_jsonl(str(VERIFIED))}
RECORDS = {r["instance_id"]: r for r in map(json.loads, VERIFIED.read_text().splitlines())}


@pytest.fixture
def offline_make_test_spec(monkeypatch):
    """swebench's own make_test_spec, minus the environment image's script: that one fetches
    requirement files from GitHub, and eval_script does not depend on it."""
    monkeypatch.setattr(sb_test_spec, "make_env_script_list", lambda *args: [])
    return sb_test_spec.make_test_spec


def test_the_verified_50_records_follow_the_swebench_harness():
    assert list(TASKS) == list(VERIFIED_50)
    assert {harness.harness_of(t) for t in TASKS.values()} == {Harness.SWEBENCH}
    assert {harness.harness_of(t) for t in builtin_tasks()} == {Harness.SWEJAX}
    assert harness.image(TASKS["django__django-11333"]) == (
        "swebench/sweb.eval.x86_64.django_1776_django-11333:latest"
    )


def test_eval_scripts_are_the_harness_scripts(offline_make_test_spec):
    for instance_id, task in TASKS.items():
        spec = offline_make_test_spec(RECORDS[instance_id], namespace="swebench")
        assert eval_script(task) == spec.eval_script, instance_id
        assert harness.image(task) == spec.instance_image_key, instance_id
    django = eval_script(TASKS["django__django-11333"])
    assert "source /opt/miniconda3/bin/activate\nconda activate testbed\n" in django
    assert (
        "\n./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 "
        "urlpatterns.test_resolvers\n" in django
    )


def test_eval_script_is_total_swejax_tasks_get_their_grading_steps():
    task = next(t for t in builtin_tasks() if t.instance_id == "swejax__b_roman_repeat")
    script = eval_script(task)
    assert script.startswith("#!/bin/bash\n") and task.test_patch.rstrip("\n") in script
    assert f"{task.test_command} --version" in script and "--junitxml=" in script
    assert all(test in script for test in task.FAIL_TO_PASS)


def test_the_parser_is_swebench_s_for_each_repository():
    for task in TASKS.values():
        assert harness.log_parser(task) is MAP_REPO_TO_PARSER[task.repo]
    expected = {
        "django__django-11333": sb_parsers.parse_log_django,
        "sympy__sympy-13615": sb_parsers.parse_log_sympy,
        "pytest-dev__pytest-7982": sb_parsers.parse_log_pytest,
        "psf__requests-2317": sb_parsers.parse_log_requests,
        "matplotlib__matplotlib-20826": sb_parsers.parse_log_matplotlib,
        "sphinx-doc__sphinx-8721": sb_parsers.parse_log_sphinx,
    }
    for instance_id, parser in expected.items():
        assert harness.log_parser(TASKS[instance_id]) is parser, instance_id


def test_unknown_repo_version_and_missing_swebench_name_the_task(monkeypatch):
    unknown = dataclasses.replace(TASKS["django__django-11333"], version="0.1")
    with pytest.raises(HarnessError, match="django__django-11333.*no specs for django/django"):
        eval_script(unknown)
    import sys

    monkeypatch.setitem(sys.modules, "swebench.harness.grading", None)
    with pytest.raises(HarnessError, match=r"django__django-11333.*swejax\[swebench\]"):
        eval_script(TASKS["django__django-11333"])


# --- resolution on real logs, against swebench's get_eval_report ----------------------------

_TEST_PATCH = (
    "diff --git a/test_calc.py b/test_calc.py\n--- a/test_calc.py\n+++ b/test_calc.py\n"
    "@@ -1 +1 @@\n-import os\n+import os  # the test patch\n"
)


def _record(instance_id, repo, version, f2p, p2p, **extra):
    return {
        "instance_id": instance_id,
        "repo": repo,
        "base_commit": "0123456789abcdef0123456789abcdef01234567",
        "problem_statement": "x",
        "patch": "",
        "test_patch": _TEST_PATCH,
        "version": version,
        "FAIL_TO_PASS": json.dumps(f2p),
        "PASS_TO_PASS": json.dumps(p2p),
        **extra,
    }


_CALC = ["test_calc.py::test_sub", "test_calc.py::test_commutes[1-2]", "test_calc.py::test_report"]
_DJANGO = "urlpatterns.test_resolvers.{}Tests.test_{}"
_CACHE = "test_resolver_cache_default__root_urlconf"
_DJANGO_F2P = f"{_CACHE} ({_DJANGO.format('ResolverCache', _CACHE[5:])})"
_DJANGO_P2P = [f"test_str ({_DJANGO.format(k, 'str')})" for k in ("RegexPattern", "RoutePattern")]
_SYMPY = ["test_issue_6194", "test_issue_10326", "test_as_set"]
_PYTEST = ("pytest-dev__pytest-1", "pytest-dev/pytest", "6.2", ["test_calc.py::test_add"])
_SYMPY_TASK = ("sympy__sympy-1", "sympy/sympy", "1.1", ["test_contains_basic"])
# (record, log file, resolved): real logs, records built to name their tests (Python 3.11 names
# Django's tests "test_x (module.Class.test_x)"), and one real record whose names differ.
CASES = {
    "pytest all pass": (
        _record(*_PYTEST, _CALC),
        "pytest_pass.log",
        True,
    ),
    "pytest F2P fails": (
        _record(*_PYTEST, _CALC),
        "pytest_fail.log",
        False,
    ),
    "pytest P2P missing": (
        _record(*_PYTEST, [*_CALC, "test_calc.py::test_gone"]),
        "pytest_pass.log",
        False,
    ),
    "pytest prints APPLY_PATCH_FAIL": (
        _record(*_PYTEST, _CALC),
        "pytest_marker.log",
        False,
    ),
    "django all pass": (
        _record("django__django-1", "django/django", "3.0", [_DJANGO_F2P], _DJANGO_P2P),
        "django_pass.log",
        True,
    ),
    "django P2P fails": (
        _record("django__django-1", "django/django", "3.0", [_DJANGO_F2P], _DJANGO_P2P),
        "django_fail.log",
        False,
    ),
    "django real record, names of Python < 3.11": (
        RECORDS["django__django-11333"],
        "django_pass.log",
        False,
    ),
    "sympy all pass": (
        _record(*_SYMPY_TASK, _SYMPY),
        "sympy_pass.log",
        True,
    ),
    "sympy P2P missing": (
        _record(*_SYMPY_TASK, [*_SYMPY, "test_gone"]),
        "sympy_pass.log",
        False,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_resolution_on_real_logs_is_get_eval_report_s(case, offline_make_test_spec):
    record, log_name, expected = CASES[case]
    task = task_from_record(record, case)
    spec = offline_make_test_spec(record)
    prediction = {
        "instance_id": record["instance_id"],
        "model_patch": "x",
        "model_name_or_path": "m",
    }
    report = sb_grading.get_eval_report(spec, prediction, str(LOGS / log_name), True)
    resolved, status, found = harness.read_log(task, (LOGS / log_name).read_text())
    assert resolved is report[record["instance_id"]]["resolved"] is expected
    assert found is report[record["instance_id"]]["patch_successfully_applied"]
    if found:
        assert status == sb_grading.get_logs_eval(spec, str(LOGS / log_name))[0]


def test_a_log_without_markers_is_unresolved():
    record, log_name, _ = CASES["pytest all pass"]
    log = (LOGS / log_name).read_text().replace(">>>>> End Test Output", "")
    assert harness.read_log(task_from_record(record, "x"), log) == (False, {}, False)


# --- SWE-rebench and newer-form records -----------------------------------------------------

_INSTALL_CONFIG = {
    "python": "3.11",
    "install": "pip install -e .",
    "pip_packages": ["pytest"],
    "test_cmd": "pytest --no-header -rA --tb=no -p no:cacheprovider",
    "log_parser": "parse_log_pytest",
    "eval_commands": ["export LANG=C.UTF-8"],
}


def _rebench(**config):
    record = _record(
        "octo__calc-7", "octo/calc", "0.1", ["test_calc.py::test_add"], _CALC,
        install_config={**_INSTALL_CONFIG, **config},
        docker_image="swerebench/sweb.eval.x86_64.octo_1776_calc-7",
    )  # fmt: skip
    return task_from_record(record, "rebench")


def test_swe_rebench_scripts_come_from_install_config():
    task = _rebench()
    assert harness.harness_of(task) is Harness.SWE_REBENCH
    assert harness.image(task) == "swerebench/sweb.eval.x86_64.octo_1776_calc-7"
    base = "0123456789abcdef0123456789abcdef01234567"
    # The fork's make_eval_script_list_py, spelled out for this record.
    expected = [
        "#!/bin/bash",
        "set -uxo pipefail",
        "source /opt/miniconda3/bin/activate",
        "conda activate testbed",
        "cd /testbed",
        "export LANG=C.UTF-8",
        "git config --global --add safe.directory /testbed",
        "cd /testbed",
        "git status",
        "git show",
        f"git -c core.fileMode=false diff {base}",
        "source /opt/miniconda3/bin/activate",
        "conda activate testbed",
        "pip install -e .",
        f"git checkout {base} test_calc.py",
        f"git apply -v - <<'EOF_114329324912'\n{_TEST_PATCH}\nEOF_114329324912",
        ": '>>>>> Start Test Output'",
        "pytest --no-header -rA --tb=no -p no:cacheprovider test_calc.py",
        ": '>>>>> End Test Output'",
        f"git checkout {base} test_calc.py",
    ]
    assert eval_script(task) == "\n".join(expected) + "\n"
    assert "octo/calc" not in MAP_REPO_VERSION_TO_SPECS and "octo/calc" not in MAP_REPO_TO_PARSER


def test_swe_rebench_logs_are_read_with_the_parser_install_config_names():
    task = _rebench()
    assert harness.log_parser(task) is sb_parsers.parse_log_pytest
    assert harness.read_log(task, (LOGS / "pytest_pass.log").read_text())[0] is True
    assert harness.read_log(task, (LOGS / "pytest_fail.log").read_text())[0] is False
    assert harness.read_log(task, (LOGS / "pytest_marker.log").read_text())[0] is False
    assert harness.log_parser(_rebench(log_parser="parse_log_pytest_v2")) is (
        sb_parsers.parse_log_pytest_v2
    )
    with pytest.raises(HarnessError, match="no log parser named 'parse_log_nothing'"):
        harness.log_parser(_rebench(log_parser="parse_log_nothing"))
    assert "octo/calc" not in MAP_REPO_VERSION_TO_SPECS and "octo/calc" not in MAP_REPO_TO_PARSER


def test_a_newer_form_record_brings_its_own_script_and_parser():
    script = "#!/bin/bash\nsource /opt/miniconda3/bin/activate\nconda activate testbed\nx\n"
    record = _record(
        "octo__calc-8", "octo/calc", "0.1", ["test_calc.py::test_add"], _CALC,
        eval_script=script, image="octo/calc:8", log_parser="parse_log_pytest",
        eval_type="pass_and_fail",
    )  # fmt: skip
    task = task_from_record(record, "new")
    assert harness.harness_of(task) is Harness.SWEBENCH_SCRIPT
    assert eval_script(task) == script and harness.image(task) == "octo/calc:8"
    assert harness.shell_activation(task) == harness.ACTIVATE
    assert harness.read_log(task, (LOGS / "pytest_pass.log").read_text())[0] is True
    assert harness.read_log(task, (LOGS / "pytest_fail.log").read_text())[0] is False


# --- grading in the image, with the container stood in for --------------------------------


class _FakeContainer:
    """Stands in for DockerSandbox: records what grading writes and runs, answers from a
    script of (exit code, output, timed out) per command."""

    made: list = []

    def __init__(self, image, repo_dir, limits, workdir, **options):
        self.args, self.files, self.commands = (image, repo_dir, limits, workdir, options), {}, []
        _FakeContainer.made.append(self)

    def write_file(self, path, text):
        self.files[path] = text

    def run(self, command, timeout=None):
        from swejax.env.sandbox import RunResult

        self.commands.append((command, timeout))
        code, output, timed_out = self.answers.pop(0)
        return RunResult(output, code, timed_out, 0, 0.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _grade_with(monkeypatch, task, answers):
    _FakeContainer.made = []
    _FakeContainer.answers = list(answers)
    monkeypatch.setattr(harness_grade, "DockerSandbox", _FakeContainer)
    result = grade(task, "diff --git a/x b/x\n", runtime="docker")
    return result, _FakeContainer.made[0]


def test_grading_runs_the_harness_steps_in_the_image(monkeypatch):
    record, log_name, _ = CASES["django all pass"]
    task = task_from_record(record, "x")
    log = (LOGS / log_name).read_text()
    result, box = _grade_with(
        monkeypatch, task, [(1, "no", False), (0, "ok", False), (0, log, False)]
    )
    image, repo_dir, limits, workdir, options = box.args
    assert image == "swebench/sweb.eval.x86_64.django_1776_django-1:latest" and repo_dir is None
    assert workdir == "/testbed"
    assert options == {"image_environment": True, "user": "root", "network": True}
    assert box.files == {"/tmp/patch.diff": "diff --git a/x b/x\n", "/eval.sh": eval_script(task)}
    assert [c for c, _ in box.commands] == [
        "git apply --verbose /tmp/patch.diff",
        "git apply --verbose --reject /tmp/patch.diff",
        "/bin/bash /eval.sh",
    ]
    assert box.commands[-1][1] == 1800 and limits.timeout_seconds == 1800
    assert result.resolved and result.patch_applied and result.dropped_files == ()
    assert set(result.outcomes.values()) == {"passed"} and not result.infrastructure_error


def test_grading_failures_are_the_harness_s(monkeypatch):
    record, _, _ = CASES["django all pass"]
    task = task_from_record(record, "x")
    result, box = _grade_with(monkeypatch, task, [(1, "", False)] * 3)
    assert len(box.commands) == 3 and box.commands[-1][0].startswith("patch --batch --fuzz=5")
    assert not result.resolved and not result.patch_applied and not result.infrastructure_error
    result, _ = _grade_with(monkeypatch, task, [(0, "", False), (137, "", True)])
    assert not result.resolved and result.patch_applied and not result.infrastructure_error
    fail_log = (LOGS / "django_fail.log").read_text()
    result, _ = _grade_with(monkeypatch, task, [(0, "", False), (1, fail_log, False)])
    assert not result.resolved and result.outcomes[_DJANGO_P2P[0]] == "failed"


def test_grading_needs_docker_and_an_image():
    task = dataclasses.replace(TASKS["django__django-11333"], image="swejax-test/absent:never")
    with pytest.raises(HarnessError, match="bwrap runtime cannot run it"):
        grade(task, task.patch, runtime="bwrap")
    result = grade(task, task.patch, runtime="docker")  # no engine here, or no such image
    assert not result.resolved and result.infrastructure_error


# --- the agent's shell: the image's environment --------------------------------------------


def test_the_agent_shell_starts_in_the_image_environment(monkeypatch):
    opened = []
    monkeypatch.setattr(_task_sandbox, "open_sandbox", lambda *a, **k: opened.append((a, k)))
    # The stand-in is no context manager: only the arguments it was given count.
    with (
        pytest.raises(TypeError),
        _task_sandbox.task_sandbox(TASKS["django__django-11333"], "docker"),
    ):
        pass
    (args, kwargs) = opened[0]
    assert args == (None, "docker", None)
    assert kwargs == {
        "image": "swebench/sweb.eval.x86_64.django_1776_django-11333:latest",
        "workdir": "/testbed",
        "activate": "source /opt/miniconda3/bin/activate && conda activate testbed",
    }
    builtin = builtin_tasks()[0]
    assert _task_sandbox.docker_target(builtin) == (builtin.docker_image, "/repo", "")
    bwrap = _task_sandbox.task_sandbox(TASKS["django__django-11333"], "bwrap")
    with pytest.raises(HarnessError, match="bwrap runtime cannot run it"), bwrap:
        pass


# --- eval --write-eval-scripts ---------------------------------------------------------------


@pytest.mark.slow
def test_eval_writes_the_verified_50_scripts(tmp_path, capsys, offline_make_test_spec):
    from swejax.main import main

    out = tmp_path / "scripts"
    argv = ["eval", f"--tasks={VERIFIED}", "--set=verified-50", f"--write-eval-scripts={out}"]
    assert main(argv) == 0
    assert "wrote 50 eval scripts" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted(f"{i}.sh" for i in VERIFIED_50)
    for instance_id in VERIFIED_50:
        spec = offline_make_test_spec(RECORDS[instance_id])
        assert (out / f"{instance_id}.sh").read_text() == spec.eval_script, instance_id
    django = (out / "django__django-11333.sh").read_text()
    assert "conda activate testbed" in django
    assert (
        "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 "
        "urlpatterns.test_resolvers" in django
    )
    assert "bin/test -C --verbose sympy/" in (out / "sympy__sympy-13615.sh").read_text()
    assert "\npytest -rA testing/" in (out / "pytest-dev__pytest-7982.sh").read_text()


# --- the agent cannot see the future ------------------------------------------------------


def _git(repo, *args):
    command = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo_with_a_future(tmp_path):
    """A repository checked out at `base` on branch work, with later commits on main, a tag, a
    remote's branch, a stash and reflog entries that all point past it."""
    origin, repo = tmp_path / "origin", tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "base")
    base = _git(repo, "rev-parse", "HEAD").strip()
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    _git(repo, "commit", "-qam", "the fix, from the future")
    _git(repo, "tag", "v2")
    _git(repo, "clone", "-q", "--bare", str(repo), str(origin))
    _git(repo, "remote", "add", "origin", str(origin))
    _git(repo, "fetch", "-q", "origin")
    _git(repo, "checkout", "-q", "-b", "work", base)
    (repo / "calc.py").write_text("stash me\n")
    _git(repo, "stash", "-q")
    future = _git(repo, "rev-parse", "main").strip()
    return repo, base, future


def _history(sandbox):
    return {
        "log": sandbox.run("git log --all --format=%H").output.split(),
        "rev-list": sandbox.run("git rev-list --all").output.split(),
        "refs": sandbox.run("git for-each-ref --format='%(refname)'; git remote").output.split(),
    }


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_the_future_is_removed_before_an_episode(repo_with_a_future):
    from swejax.env.sandbox import open_sandbox
    from swejax.env.scaffold import _episode

    repo, base, future = repo_with_a_future
    with open_sandbox(str(repo)) as sandbox:
        assert future in _history(sandbox)["log"]
        _episode.hide_future(sandbox, TASKS["django__django-11333"])
        history = _history(sandbox)
        assert history["log"] == history["rev-list"] == [base]
        assert history["refs"] == ["refs/heads/work"]
        assert sandbox.run(f"git cat-file -e {future}").exit_code != 0  # pruned, not just hidden
        assert sandbox.run("git status --porcelain").output == ""

    # Wired into every episode: a task whose repository is a clone with a future (and a new
    # file, for materialize's commit of the base).
    (repo / "notes.txt").write_text("notes\n")
    from swejax.env.scaffold import open_episode
    from swejax.tasks import Task

    task = Task("local__calc-1", "local/calc", base, "x", "", "", ("t",), (), repo_dir=str(repo))
    with open_episode(task) as episode:
        history = _history(episode.sandbox)
        assert future not in history["log"] and base in history["log"]
        assert history["log"] == history["rev-list"]
        assert episode.sandbox.run(f"git cat-file -e {future}").exit_code != 0

"""Task records, the JSONL loader, and the built-in tasks (gold patch passes, base fails)."""

import json
import subprocess
import sys

import pytest

from swejax.env.junit import parse_junit
from swejax.tasks import (
    TaskError,
    builtin_tasks,
    load_hf_dataset,
    load_jsonl,
    load_source,
    materialize,
    patch_files,
    select_tasks,
)

RECORD = {
    "instance_id": "octo__lib-1",
    "repo": "octo/lib",
    "base_commit": "abc123",
    "problem_statement": "It crashes.",
    "patch": "diff --git a/lib/x.py b/lib/x.py\n--- a/lib/x.py\n+++ b/lib/x.py\n",
    "test_patch": "diff --git a/tests/test_x.py b/tests/test_x.py\n",
    "FAIL_TO_PASS": json.dumps(["tests/test_x.py::test_a"]),
    "PASS_TO_PASS": ["tests/test_x.py::test_b"],
    "image_name": "swerebench/octo-lib-1",
}


def _write(tmp_path, lines):
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_jsonl_loads_swe_bench_and_swe_rebench_forms(tmp_path):
    (task,) = load_jsonl(_write(tmp_path, [json.dumps(RECORD)]))
    assert task.FAIL_TO_PASS == ("tests/test_x.py::test_a",)
    assert task.PASS_TO_PASS == ("tests/test_x.py::test_b",)
    assert task.image == task.docker_image == "swerebench/octo-lib-1"
    assert task.workdir == "/testbed"  # SWE-bench-style images hold the repository there
    assert task.test_files == ("tests/test_x.py",)


def test_jsonl_keeps_the_whole_record_and_reads_swejax_fields(tmp_path):
    (tmp_path / "repos" / "one").mkdir(parents=True)
    extra = {"environment_setup_commit": "def456", "install_config": {"test_cmd": "pytest -rA"}}
    record = {**RECORD, **extra, "repo_dir": "repos/one", "test_command": "python3 -m pytest"}
    (task,) = load_jsonl(_write(tmp_path, [json.dumps(record)]))
    assert task.repo_dir == str(tmp_path / "repos" / "one")  # relative to the JSONL's folder
    assert task.test_command == "python3 -m pytest"
    assert task.record["install_config"] == {"test_cmd": "pytest -rA"}
    assert task.record["environment_setup_commit"] == "def456"
    with pytest.raises(TypeError):
        task.record["repo"] = "changed"  # read-only
    missing = {**RECORD, "repo_dir": "repos/absent"}
    with pytest.raises(TaskError, match=r"tasks.jsonl:1: repo_dir 'repos/absent' is not a folder"):
        load_jsonl(_write(tmp_path, [json.dumps(missing)]))


def test_hugging_face_datasets_form(monkeypatch):
    import types

    calls = []

    def load_dataset(name, split, **kwargs):
        calls.append((name, split, kwargs))
        return [RECORD, {**RECORD, "instance_id": "octo__lib-2", "PASS_TO_PASS": "[]"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    tasks = load_hf_dataset("nebius/SWE-rebench", split="test", revision="main")
    assert [t.instance_id for t in tasks] == ["octo__lib-1", "octo__lib-2"]
    assert tasks[1].PASS_TO_PASS == () and calls == [
        ("nebius/SWE-rebench", "test", {"revision": "main"})
    ]

    def bad(name, split, **kwargs):
        return [RECORD, {**RECORD, "instance_id": "x", "patch": None}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=bad))
    with pytest.raises(TaskError, match=r"nebius/SWE-rebench\[test\]:1: field 'patch'"):
        load_hf_dataset("nebius/SWE-rebench")
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(TaskError, match="pip install datasets"):
        load_hf_dataset("nebius/SWE-rebench")


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"tasks\.jsonl:2: not valid JSON"),
        (json.dumps({**RECORD, "instance_id": 7}), r":2: field 'instance_id' must be a string"),
        (json.dumps({k: v for k, v in RECORD.items() if k != "patch"}), r":2: field 'patch' is"),
        (json.dumps({**RECORD, "PASS_TO_PASS": "nope"}), r":2: field 'PASS_TO_PASS' is a string"),
        (json.dumps({**RECORD, "FAIL_TO_PASS": [1]}), r":2: field 'FAIL_TO_PASS' must be a list"),
        (json.dumps(RECORD), r":2: instance_id 'octo__lib-1' appears twice"),
    ],
)
def test_malformed_records_name_line_and_field(tmp_path, line, message):
    path = _write(tmp_path, [json.dumps(RECORD), line])
    with pytest.raises(TaskError, match=message):
        load_jsonl(path)


def _records(repo: str, *numbers: int) -> list[str]:
    owner, name = repo.split("/")
    return [
        json.dumps({**RECORD, "repo": repo, "instance_id": f"{owner}__{name}-{n}"}) for n in numbers
    ]


def test_several_sources_load_together_in_order(tmp_path):
    first = tmp_path / "a" / "tasks.jsonl"
    first.parent.mkdir()
    first.write_text("\n".join(_records("octo/lib", 1, 2)) + "\n")
    second = _write(tmp_path, _records("cat/app", 1))
    tasks = load_source(f"{first}, builtin ,{second}")
    ids = [t.instance_id for t in tasks]
    assert ids[:2] == ["octo__lib-1", "octo__lib-2"] and ids[-1] == "cat__app-1"
    assert len(ids) == 3 + len(builtin_tasks())
    with pytest.raises(TaskError, match=r"'octo__lib-1' is in two sources: .*a/tasks.jsonl and"):
        load_source(f"{first},{first}")
    with pytest.raises(TaskError, match="names no source"):
        load_source(" , ")


def test_a_split_by_repository_keeps_every_repository_on_one_side(tmp_path):
    tasks = load_jsonl(_write(tmp_path, _records("octo/lib", 1, 2) + _records("cat/app", 1, 2)))
    train, held_out = select_tasks(tasks, "", "", "cat/app")
    assert [t.instance_id for t in train] == ["octo__lib-1", "octo__lib-2"]
    assert [t.instance_id for t in held_out] == ["cat__app-1", "cat__app-2"]
    # Held-out ids and repositories together; named training tasks stay as named.
    train, held_out = select_tasks(tasks, "octo__lib-2", "octo__lib-1", "cat/app")
    assert [t.instance_id for t in train] == ["octo__lib-2"]
    assert [t.instance_id for t in held_out] == ["octo__lib-1", "cat__app-1", "cat__app-2"]
    with pytest.raises(TaskError, match="a held-out repository: cat__app-1"):
        select_tasks(tasks, "cat__app-1", "", "cat/app")
    with pytest.raises(TaskError, match="repositories with no task: dog/pkg"):
        select_tasks(tasks, "", "", "cat/app,dog/pkg")


def test_the_tasks_mode_shows_the_split_from_the_command_line(tmp_path, capsys):
    from swejax.main import main

    extra = _write(tmp_path, _records("cat/app", 1, 2))
    args = ["tasks", f"--config.tasks.source=builtin,{extra}", "--config.tasks.train="]
    assert main([*args, "--config.tasks.eval_repos=cat/app", "--json"]) == 0
    split = json.loads(capsys.readouterr().out)
    assert split["eval"] == ["cat__app-1", "cat__app-2"] and not split["eval_reuses_train"]
    assert split["train"] == [t.instance_id for t in builtin_tasks()]
    assert main([*args]) == 0
    out = capsys.readouterr().out
    assert "train   22 tasks from 21 repositories" in out and "reuses the training tasks" in out
    assert main([*args, "--config.tasks.eval_repos=dog/pkg"]) == 2
    assert "dog/pkg" in capsys.readouterr().err


def test_patch_files_reads_renames_and_new_files():
    patch = "diff --git a/a.py b/a.py\n+x\ndiff --git a/old.py b/new.py\nrename\n"
    assert patch_files(patch) == ("a.py", "old.py", "new.py")


def _run_tests(repo, ids, tmp_path):
    report = tmp_path / "report.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            *ids,
        ],
        cwd=repo,
        capture_output=True,
        timeout=120,
    )
    return parse_junit(report.read_text())


def _apply(repo, patch):
    subprocess.run(["git", "apply", "-"], cwd=repo, input=patch.encode(), check=True)


TASKS = builtin_tasks()


def test_there_are_at_least_twenty_varied_builtin_tasks():
    assert len(TASKS) >= 20
    assert len({t.instance_id for t in TASKS}) == len(TASKS)
    assert any(len([f for f in patch_files(t.patch) if f.endswith(".py")]) >= 2 for t in TASKS)


@pytest.mark.parametrize("task", TASKS, ids=[t.instance_id for t in TASKS])
def test_builtin_task_fails_on_base_and_passes_with_gold(task, tmp_path):
    assert not set(patch_files(task.patch)) & set(task.test_files), "gold patch edits tests"
    repo = materialize(task, str(tmp_path / "repo"))
    _apply(repo, task.test_patch)
    ids = [*task.FAIL_TO_PASS, *task.PASS_TO_PASS]
    before = _run_tests(repo, ids, tmp_path)
    for test in task.FAIL_TO_PASS:
        assert before.get(test) in ("failed", "error"), f"{test} should fail before: {before}"
    for test in task.PASS_TO_PASS:
        assert before.get(test) == "passed", f"{test} should pass before: {before}"
    _apply(repo, task.patch)
    after = _run_tests(repo, ids, tmp_path)
    for test in ids:
        assert after.get(test) == "passed", f"{test} should pass with the gold patch: {after}"


def test_junit_report_maps_to_pytest_node_ids(tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_demo.py").write_text(
        "import pytest\n"
        "def test_ok():\n    pass\n"
        "def test_bad():\n    assert False\n"
        "@pytest.mark.skip\ndef test_skip():\n    pass\n"
        "class TestGroup:\n    def test_inner(self):\n        pass\n"
        "@pytest.mark.parametrize('x', [1, 2])\ndef test_param(x):\n    assert x == 1\n"
    )
    outcomes = _run_tests(str(tmp_path), ["tests"], tmp_path)
    assert outcomes == {
        "tests/test_demo.py::test_ok": "passed",
        "tests/test_demo.py::test_bad": "failed",
        "tests/test_demo.py::test_skip": "skipped",
        "tests/test_demo.py::TestGroup::test_inner": "passed",
        "tests/test_demo.py::test_param[1]": "passed",
        "tests/test_demo.py::test_param[2]": "failed",
    }


def test_materialize_takes_a_folder_that_is_already_a_clean_git_checkout(tmp_path):
    import dataclasses

    source = tmp_path / "checkout"
    source.mkdir()
    (source / "mod.py").write_text("x = 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "first"]):
        subprocess.run(git + args, cwd=source, check=True, capture_output=True)
    task = dataclasses.replace(builtin_tasks()[0], repo_dir=str(source))
    repo = materialize(task, str(tmp_path / "copy"))
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True)
    assert status.returncode == 0 and status.stdout == b""
    assert (tmp_path / "copy" / "mod.py").read_text() == "x = 1\n"

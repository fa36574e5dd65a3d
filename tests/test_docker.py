"""The docker runtime: containment, cleanup, and real episodes graded in the task's image.

Needs a Docker engine and the images of tools/build_images.py (`.ci/run` starts one and builds
them); elsewhere these tests are skipped.
"""

import os
import socket
import subprocess
import time

import pytest

from swejax.env import SandboxError, SandboxLimits, open_sandbox
from swejax.env.grading import grade
from swejax.env.sandbox import reap
from swejax.env.sandbox._docker import LABEL, OWNER_LABEL
from swejax.env.scaffold import EndReason, ScaffoldConfig, open_episode, patch_commands
from swejax.rl import episode_reward
from swejax.rollout import EpisodeEnv, ScriptedPolicy, run_episode
from swejax.tasks import builtin_tasks
from swejax.tokenizer import load_tokenizer

pytestmark = pytest.mark.docker
TASKS = {t.instance_id: t for t in builtin_tasks()}
ROMAN = TASKS["swejax__b_roman_repeat"]
SEMVER = TASKS["swejax__a_semver_prerelease"]
IMAGES_NEEDED = [ROMAN.docker_image, SEMVER.docker_image]


def _engine():
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except Exception:
        return None


CLIENT = _engine()
if CLIENT is None or not all(CLIENT.images.list(name=image) for image in IMAGES_NEEDED):
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI must start a Docker engine and build the task images (see .ci/run): "
            f"{IMAGES_NEEDED}"
        )
    pytest.skip("no Docker engine, or the task images are not built", allow_module_level=True)


@pytest.fixture
def sb():
    with open_sandbox(None, "docker", image=ROMAN.docker_image) as sandbox:
        yield sandbox


def _containers(**labels):
    filters = {"label": [LABEL] + [f"{k}={v}" for k, v in labels.items()]}
    return CLIENT.containers.list(all=True, filters=filters)


def test_directory_exports_and_editor_tools_persist(sb):
    sb.run("cd roman && export GREETING=hello")
    assert sb.run('pwd; echo "$GREETING"').output.split() == ["/repo/roman", "hello"]
    assert sb.run("exit 3").exit_code == 3
    assert sb.run("open convert.py 5").output.startswith("[File: /repo/roman/convert.py")
    assert sb.run("goto 1").exit_code == 0
    sb.write_file("notes.txt", "hello\n")
    assert "notes.txt" in sb.diff()


def test_host_is_untouched_and_invisible(sb, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host only")
    sb.run("echo x > /etc/swejax-escape")
    assert not os.path.exists("/etc/swejax-escape")
    assert "No such file" in sb.run(f"cat {secret} 2>&1").output


def test_no_network(sb):
    code = "import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)"
    result = sb.run(f'python3 -c "{code}"', timeout=20)
    assert result.exit_code != 0 and "unreachable" in result.output.lower()


def test_timeout_output_cap_and_infinite_loop():
    limits = SandboxLimits(output_bytes=1000)
    with open_sandbox(None, "docker", limits, image=ROMAN.docker_image) as sb:
        result = sb.run("while true; do :; done", timeout=2)
        assert result.timed_out and result.seconds < 10
        result = sb.run("head -c 100000000 /dev/zero | tr '\\0' 'y'", timeout=60)
        assert result.output_bytes_dropped == 100_000_000 - 1000
        assert "[output truncated: 99999000 more bytes not shown]" in result.output
        assert sb.run("echo alive").output.strip() == "alive"


def test_fork_bomb_and_memory_hog_are_contained():
    limits = SandboxLimits(max_processes=64, memory_bytes=256 * 2**20)
    with open_sandbox(None, "docker", limits, image=ROMAN.docker_image) as sb:
        bomb = sb.run("bomb() { bomb | bomb & }; bomb; sleep 1; echo done", timeout=30)
        assert "done" in bomb.output or bomb.timed_out
        hog = sb.run("python3 -c 'x = bytearray(1024 * 2**20); print(len(x))'", timeout=30)
        assert hog.exit_code != 0
        assert sb.run("echo alive", timeout=30).output.strip() == "alive"


def _host_processes(prefix: str) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if line.startswith(prefix)]


@pytest.mark.slow
def test_background_processes_die_with_their_command_and_the_sandbox():
    with open_sandbox(None, "docker", image=ROMAN.docker_image) as sb:
        result = sb.run("(sleep 7332 &); echo started", timeout=10)
        assert result.output.strip() == "started" and result.seconds < 5
        assert not _host_processes("sleep 7332")  # killed with its command's process group
        sb.run("setsid sleep 7333 > /dev/null 2>&1 < /dev/null &", timeout=10)  # escaped it
        container_id = sb._container.id
    assert not CLIENT.containers.list(all=True, filters={"id": container_id})
    deadline = time.monotonic() + 10
    while _host_processes("sleep 7333") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _host_processes("sleep 7333")  # gone with the container


@pytest.mark.slow
def test_reaper_removes_containers_of_dead_owners_only():
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    orphan = CLIENT.containers.run(
        ROMAN.docker_image,
        ["sleep", "infinity"],
        detach=True,
        labels={LABEL: "1", OWNER_LABEL: f"{host}:{dead.pid}"},
    )
    with open_sandbox(None, "docker", image=ROMAN.docker_image) as live:
        removed = reap(CLIENT)
        assert orphan.name in removed
        assert _containers(**{OWNER_LABEL: f"{host}:{os.getpid()}"})  # ours is kept
        assert live.run("echo ok").output.strip() == "ok"
    assert not _containers(**{OWNER_LABEL: f"{host}:{dead.pid}"})
    assert not _containers(**{OWNER_LABEL: f"{host}:{os.getpid()}"})


def test_errors_name_the_missing_image_and_a_closed_sandbox():
    with pytest.raises(SandboxError, match="swejax/no-such-image:1"):
        open_sandbox(None, "docker", image="swejax/no-such-image:1")
    with pytest.raises(SandboxError, match="needs an image"):
        open_sandbox(None, "docker")
    sb = open_sandbox(None, "docker", image=ROMAN.docker_image)
    sb.close()
    with pytest.raises(SandboxError, match="closed"):
        sb.run("true")


@pytest.mark.parametrize("task", [ROMAN, SEMVER], ids=lambda t: t.instance_id)
@pytest.mark.slow
def test_scripted_episodes_graded_in_the_image(task):
    gold = [f"Fix.\n```command\n{c}\n```" for c in patch_commands(task.patch)]
    replies = [*gold, "Done.\n```command\nsubmit\n```"]
    env = EpisodeEnv("docker", ScaffoldConfig(), l_thr=10)
    tokenizer = load_tokenizer()
    result = run_episode(task, ScriptedPolicy(replies, tokenizer), env, tokenizer)
    episode, trajectory = result.episode, result.trajectory
    assert episode.end_reason is EndReason.SUBMITTED and not trajectory.infrastructure_error
    assert trajectory.resolved and trajectory.reward == 1.0
    assert episode_reward(True, episode.turns) == trajectory.reward
    assert not grade(task, "", runtime="docker").resolved


@pytest.mark.slow
def test_validate_tasks_on_docker(tmp_path, capsys):
    import json

    from swejax.main import main

    report = tmp_path / "report.json"
    ids = [ROMAN.instance_id, SEMVER.instance_id]
    args = ["validate-tasks", "--runtime=docker", f"--report={report}"]
    assert main([*args, *(f"--only={i}" for i in ids)]) == 0
    assert "2 of 2 tasks valid" in capsys.readouterr().out
    rows = json.loads(report.read_text())["tasks"]
    assert all(r["gold_resolved"] and r["empty_resolved"] is False for r in rows)


# A stand-in for SWE-bench's conda at its path: `activate` defines `conda`, whose `activate NAME`
# exports what conda's does that matters here.
_FAKE_CONDA = (
    'conda() { [ "$1" = activate ] && export CONDA_DEFAULT_ENV="$2" '
    'PATH="/opt/miniconda3/envs/$2/bin:$PATH"; }\n'
)


@pytest.fixture
def conda_image():
    from swejax.env.sandbox._docker import _tar

    container = CLIENT.containers.run(ROMAN.docker_image, ["sleep", "infinity"], detach=True)
    try:
        container.put_archive(
            "/", _tar({"opt/miniconda3/bin/activate": (_FAKE_CONDA.encode(), 0o644)})
        )
        container.exec_run(["mkdir", "-p", "/opt/miniconda3/envs/testbed/bin"])
        container.exec_run(
            ["ln", "-s", "/usr/bin/python3", "/opt/miniconda3/envs/testbed/bin/python"]
        )
        image = container.commit(repository="swejax-test/fake-conda", tag="latest")
    finally:
        container.remove(force=True)
    yield "swejax-test/fake-conda:latest"
    CLIENT.images.remove(image.id, force=True)


@pytest.mark.slow
def test_the_shell_starts_in_the_image_environment(conda_image):
    from swejax.env.harness import ACTIVATE

    with open_sandbox(None, "docker", image=conda_image, activate=ACTIVATE) as sb:
        first = sb.run('echo "$CONDA_DEFAULT_ENV"; command -v python; command -v open')
        assert first.output.split() == [
            "testbed",
            "/opt/miniconda3/envs/testbed/bin/python",
            "/.swejax_tools/bin/open",
        ]
        sb.run("cd roman")  # a later command still sees the environment, and its own state
        assert sb.run('echo "$CONDA_DEFAULT_ENV $PWD"').output.split() == ["testbed", "/repo/roman"]
    with pytest.raises(SandboxError, match="could not enter the image's environment"):
        open_sandbox(None, "docker", image=ROMAN.docker_image, activate=ACTIVATE)


_CALC = "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"
_TESTS = "from calc import add, sub\n\n\ndef test_sub():\n    assert sub(5, 3) == 2\n"
_FIX = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1,5 +1,5 @@\n"
    " def add(a, b):\n-    return a - b\n+    return a + b\n \n \n def sub(a, b):\n"
)
_TEST_PATCH = (
    "diff --git a/test_calc.py b/test_calc.py\n--- a/test_calc.py\n+++ b/test_calc.py\n"
    "@@ -3,3 +3,7 @@ from calc import add, sub\n \n def test_sub():\n     assert sub(5, 3) == 2\n"
    "+\n+\n+def test_add():\n+    assert add(2, 3) == 5\n"
)
_PYTEST = '#!/bin/sh\nexec python3 -m pytest -p no:cacheprovider "$@"\n'


@pytest.fixture(scope="module")
def rebench_image():
    """A SWE-rebench-style image: the repository at /testbed, its base commit checked out with a
    later commit reachable only from a tag and the reflog, and a (stand-in) testbed conda env."""
    from swejax.env.sandbox._docker import _tar

    container = CLIENT.containers.run(ROMAN.docker_image, ["sleep", "infinity"], detach=True)
    files = {
        "opt/miniconda3/bin/activate": (_FAKE_CONDA.encode(), 0o644),
        "opt/miniconda3/envs/testbed/bin/pytest": (_PYTEST.encode(), 0o755),
        "testbed/calc.py": (_CALC.encode(), 0o644),
        "testbed/test_calc.py": (_TESTS.encode(), 0o644),
    }
    git = "git -c user.name=t -c user.email=t@example.com"
    script = (
        f"cd /testbed && git init -q && git add -A && {git} commit -qm base && "
        f"echo later > later.txt && git add later.txt && {git} commit -qm later && "
        "git tag v9 && git reset -q --hard HEAD~1 && git rev-parse HEAD HEAD@{1}"
    )
    try:
        container.put_archive("/", _tar(files))
        code, output = container.exec_run(["bash", "-c", script])
        assert code == 0, output
        base, later = output.decode().split()
        image = container.commit(repository="swejax-test/rebench-calc", tag="latest")
    finally:
        container.remove(force=True)
    yield "swejax-test/rebench-calc:latest", base, later
    CLIENT.images.remove(image.id, force=True)


def _rebench_task(image: str, base: str):
    from swejax.tasks import task_from_record

    record = {
        "instance_id": "octo__calc-1",
        "repo": "octo/calc",
        "base_commit": base,
        "problem_statement": "add subtracts",
        "patch": _FIX,
        "test_patch": _TEST_PATCH,
        "version": "0.1",
        "FAIL_TO_PASS": ["test_calc.py::test_add"],
        "PASS_TO_PASS": ["test_calc.py::test_sub"],
        "docker_image": image,
        "install_config": {
            "python": "3.11",
            "test_cmd": "pytest -rA",
            "log_parser": "parse_log_pytest",
        },
    }
    return task_from_record(record, "docker test")


@pytest.mark.slow
def test_a_swe_rebench_task_graded_in_its_image(rebench_image):
    pytest.importorskip("swebench.harness.grading")
    image, base, _ = rebench_image
    task = _rebench_task(image, base)
    gold = grade(task, task.patch, runtime="docker")
    assert gold.resolved and not gold.infrastructure_error, gold.log
    assert gold.outcomes == {"test_calc.py::test_add": "passed", "test_calc.py::test_sub": "passed"}
    assert ">>>>> Start Test Output" in gold.log and "PASSED test_calc.py::test_add" in gold.log
    wrong = grade(task, _FIX.replace("a + b", "a * b"), runtime="docker")
    assert wrong.patch_applied and not wrong.resolved
    assert wrong.outcomes["test_calc.py::test_add"] == "failed"
    empty = grade(task, "", runtime="docker")  # the harness's apply commands refuse it
    assert not empty.patch_applied and not empty.resolved and not empty.infrastructure_error


@pytest.mark.slow
def test_a_swe_rebench_episode_sees_no_future_in_the_image_environment(rebench_image):
    image, base, later = rebench_image
    with open_episode(_rebench_task(image, base), runtime="docker") as episode:
        run = episode.sandbox.run
        assert run("git rev-list --all; git tag; git reflog").output.split()[:1] == [base]
        assert run("git rev-list --all | wc -l; git tag | wc -l").output.split() == ["1", "0"]
        assert run(f"git cat-file -e {later}").exit_code != 0
        assert run('echo "$CONDA_DEFAULT_ENV $PWD"').output.split() == ["testbed", "/testbed"]
        assert "/testbed" in episode.first_message

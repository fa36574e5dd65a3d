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
from swejax.env.scaffold import EndReason, ScaffoldConfig, patch_commands
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

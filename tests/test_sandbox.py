"""The bubblewrap sandbox: persistence, limits and containment."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from swejax.env import SandboxError, SandboxLimits, open_sandbox
from swejax.env.sandbox import bwrap_available

if not bwrap_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install bubblewrap (see .ci/run)")
    pytest.skip("bubblewrap is not installed", allow_module_level=True)


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    (path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    git = ["git", "-c", "user.email=swejax@example.com", "-c", "user.name=swejax"]
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run(["git", "add", "."], cwd=path, check=True)
    subprocess.run([*git, "commit", "-qm", "start"], cwd=path, check=True)
    return str(path)


def test_directory_and_exports_persist_between_commands(repo):
    with open_sandbox(repo) as sb:
        assert sb.run("pwd").output.strip() == "/repo"
        sb.run("mkdir -p pkg && cd pkg && export GREETING=hello")
        result = sb.run('pwd; echo "$GREETING"')
        assert result.output.split() == ["/repo/pkg", "hello"]
        assert sb.run("exit 3").exit_code == 3
        assert sb.run("pwd").output.strip() == "/repo/pkg"


def test_python_runs_and_the_diff_shows_the_edit(repo):
    with open_sandbox(repo) as sb:
        result = sb.run("python3 -c 'import calc; print(calc.add(2, 3))'")
        assert result.output.strip() == "5" and result.exit_code == 0
        sb.run("sed -i 's/a + b/a - b/' calc.py && echo 'x = 1' > new.py")
        patch = sb.diff()
        assert "-    return a + b" in patch and "+    return a - b" in patch
        assert "new.py" in patch
    assert (Path(repo) / "calc.py").read_text().endswith("a + b\n"), "host copy untouched"


def test_host_is_read_only_and_private_files_are_absent(repo):
    with open_sandbox(repo) as sb:
        assert sb.run("echo x > /etc/swejax-escape").exit_code != 0
        assert not os.path.exists("/etc/swejax-escape")
        listing = sb.run("ls /root /home 2>&1; cat /root/.bashrc 2>&1").output
        assert "No such file or directory" in listing
        assert sb.run("id -u").output.strip() != "0"


def test_no_network(repo):
    with open_sandbox(repo) as sb:
        code = "import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)"
        result = sb.run(f'python3 -c "{code}"', timeout=20)
        assert result.exit_code != 0 and "unreachable" in result.output.lower()


def test_timeout_kills_the_command_and_the_sandbox_goes_on(repo):
    with open_sandbox(repo) as sb:
        result = sb.run("while true; do :; done", timeout=1)
        assert result.timed_out and result.seconds < 5
        assert sb.run("echo alive").output.strip() == "alive"


def test_output_is_capped_with_a_marker(repo):
    limits = SandboxLimits(output_bytes=1000)
    with open_sandbox(repo, limits=limits) as sb:
        result = sb.run("head -c 100000000 /dev/zero | tr '\\0' 'y'", timeout=60)
        assert result.output_bytes_dropped == 100_000_000 - 1000
        assert "[output truncated: 99999000 more bytes not shown]" in result.output


def test_fork_bomb_and_memory_hog_are_contained(repo):
    limits = SandboxLimits(max_processes=64, memory_bytes=512 * 2**20)
    with open_sandbox(repo, limits=limits) as sb:
        bomb = sb.run("bomb() { bomb | bomb & }; bomb; sleep 1; echo done", timeout=20)
        assert not bomb.timed_out
        hog = sb.run("python3 -c 'x = bytearray(2 * 2**30)'", timeout=20)
        assert hog.exit_code != 0 and "MemoryError" in hog.output
        assert sb.run("echo alive").output.strip() == "alive"


def _processes_with(text: str) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if line.startswith(text)]


def test_background_processes_die_with_their_command(repo):
    # A duration no other process on the machine is likely to use.
    marker = "sleep 7331"
    with open_sandbox(repo) as sb:
        result = sb.run(f"({marker} &); echo started", timeout=10)
        assert result.output.strip() == "started" and result.seconds < 5
    # The kernel tears the PID namespace down asynchronously: allow it a moment.
    deadline = time.monotonic() + 5
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_with(marker)


def test_closing_removes_the_copy_and_bad_input_is_an_error(repo, tmp_path):
    sb = open_sandbox(repo)
    copy = sb.repo
    sb.close()
    assert not os.path.exists(copy)
    with pytest.raises(SandboxError, match="closed"):
        sb.run("true")
    with pytest.raises(SandboxError, match="does not exist"):
        open_sandbox(str(tmp_path / "missing"))
    with pytest.raises(SandboxError, match="unknown sandbox runtime"):
        open_sandbox(repo, runtime="vm")

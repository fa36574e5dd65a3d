"""The bubblewrap runtime: model-written commands on the local machine, contained.

Each command runs in a fresh bubblewrap container over the same private copy of the repository:
the host's system directories read-only and nothing else of the host (no /root, /home or /tmp;
commands use the system's Python, /usr/bin/python3), the editor tools (`_tools`), no network,
its own PID namespace, an unprivileged user, and resource limits. The shell's working directory
and exported environment persist between commands through a small state directory; background
processes die with the command that started them, and a timeout kills the whole container.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from swejax.env.sandbox._tools import SANDBOX_PATH, STATE_DIR, TOOLS_DIR, write_tools
from swejax.env.sandbox._types import RunResult, SandboxError, SandboxLimits

WORKDIR = "/repo"
_STATE = STATE_DIR
# Host directories visible (read-only) inside: the system, not people's files.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc", "/opt", "/var/lib")
_UNPRIVILEGED = "nobody"

# Runs inside: restore the previous command's directory and exports, run the command in this
# shell (so `cd` and `export` stick), and save both on any exit.
_WRAPPER = f"""
cd "$(cat {_STATE}/cwd 2>/dev/null || echo {WORKDIR})" 2>/dev/null || cd {WORKDIR}
[ -f {_STATE}/env ] && . {_STATE}/env
trap 'pwd > {_STATE}/cwd; export -p > {_STATE}/env' EXIT
. {_STATE}/command.sh
"""


def bwrap_available() -> bool:
    return shutil.which("bwrap") is not None


class BwrapSandbox:
    """A private copy of `repo_dir` and a shell over it, each command in its own container."""

    def __init__(self, repo_dir: str, limits: SandboxLimits | None = None):
        if not bwrap_available():
            raise SandboxError("bubblewrap (bwrap) is not installed; apt-get install bubblewrap")
        if not os.path.isdir(repo_dir):
            raise SandboxError(f"repository directory {repo_dir!r} does not exist")
        self.limits = limits or SandboxLimits()
        self._root = tempfile.mkdtemp(prefix="swejax-sandbox-")
        self.repo = os.path.join(self._root, "repo")
        self._state = os.path.join(self._root, "state")
        self._tools = os.path.join(self._root, "tools")
        shutil.copytree(repo_dir, self.repo, symlinks=True)
        os.makedirs(self._state)
        write_tools(self._tools)
        self._uid, self._gid = os.getuid(), os.getgid()
        if self._uid == 0:
            # Root is exempt from the process limit: commands run as an unprivileged user.
            user = pwd.getpwnam(_UNPRIVILEGED)
            self._uid, self._gid = user.pw_uid, user.pw_gid
            for path in (self._root, self.repo, self._state):
                os.chown(path, self._uid, self._gid)
            for base, dirs, files in os.walk(self.repo):
                for name in dirs + files:
                    os.lchown(os.path.join(base, name), self._uid, self._gid)
        self._closed = False

    def _command_line(self) -> list[str]:
        args = ["bwrap"]
        for directory in _SYSTEM_DIRS:
            if os.path.exists(directory):
                args += ["--ro-bind", directory, directory]
        args += [
            "--bind", self.repo, WORKDIR,
            "--bind", self._state, _STATE,
            "--ro-bind", self._tools, TOOLS_DIR,
            "--tmpfs", "/tmp",
            "--dev", "/dev",
            "--proc", "/proc",
            "--unshare-all",  # network, PID, IPC, UTS, cgroup and user namespaces
            "--die-with-parent",
            "--new-session",
            "--hostname", "sandbox",
            "--chdir", WORKDIR,
            "--setenv", "HOME", "/tmp",
            "--setenv", "PATH", SANDBOX_PATH,
            "--setenv", "SWEJAX_STATE", _STATE,
            "--setenv", "LANG", "C.UTF-8",
            "--setenv", "TERM", "dumb",
            "bash", "--noprofile", "--norc", "-c", _WRAPPER,
        ]  # fmt: skip
        return args

    def _limits_prefix(self) -> list[str]:
        """`prlimit` in front of bwrap: the limits hold for every process inside."""
        limits = self.limits
        return [
            "prlimit",
            f"--as={limits.memory_bytes}",
            f"--nproc={limits.max_processes}",
            f"--fsize={limits.max_file_bytes}",
            f"--cpu={limits.cpu_seconds}",
            "--",
        ]

    def run(self, command: str, timeout: float | None = None) -> RunResult:
        """Run `command` in the shell; its output (stdout and stderr together) is capped."""
        if self._closed:
            raise SandboxError("the sandbox is closed")
        timeout = self.limits.timeout_seconds if timeout is None else timeout
        script = os.path.join(self._state, "command.sh")
        with open(script, "w") as f:
            f.write(command + "\n")
        if os.getuid() == 0:
            os.chown(script, self._uid, self._gid)
        start = time.monotonic()
        # No preexec_fn: the caller is a multithreaded JAX process, where running Python in a
        # forked child can deadlock. The session, user and limits are all set without it.
        privileged = os.getuid() == 0
        process = subprocess.Popen(
            self._limits_prefix() + self._command_line(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=self._uid if privileged else None,
            group=self._gid if privileged else None,
            extra_groups=[] if privileged else None,
            env={"PATH": "/usr/bin:/bin"},
        )
        output, dropped, timed_out = _read_capped(process, self.limits.output_bytes, timeout)
        return RunResult(
            output=_with_marker(output, dropped),
            exit_code=process.returncode,
            timed_out=timed_out,
            output_bytes_dropped=dropped,
            seconds=time.monotonic() - start,
        )

    def diff(self) -> str:
        """`git diff` of the working tree against HEAD (new files included)."""
        result = self.run(
            f"git -C {WORKDIR} add -A >/dev/null 2>&1; git -C {WORKDIR} diff --cached HEAD",
            timeout=60,
        )
        if result.exit_code != 0:
            raise SandboxError(f"git diff failed in the sandbox: {result.output[-500:]}")
        return result.output

    def write_file(self, path: str, text: str) -> None:
        """Write `text` to `path` relative to the repository."""
        full = os.path.join(self.repo, path)
        with open(full, "w") as f:
            f.write(text)
        os.chmod(full, 0o644)
        if os.getuid() == 0:
            os.chown(full, self._uid, self._gid)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> BwrapSandbox:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _read_capped(process: subprocess.Popen, cap: int, timeout: float) -> tuple[bytes, int, bool]:
    """Read all output, keeping the first `cap` bytes; kill the process group on timeout."""
    deadline = time.monotonic() + timeout
    kept = bytearray()
    dropped = 0
    timed_out = False
    os.set_blocking(process.stdout.fileno(), False)
    while True:
        try:
            chunk = process.stdout.read(65536)
        except BlockingIOError:
            chunk = None
        if chunk:
            room = cap - len(kept)
            kept += chunk[:room]
            dropped += max(0, len(chunk) - room)
            continue
        if chunk == b"" and process.poll() is not None:
            break
        if time.monotonic() > deadline:
            timed_out = True
            _kill_group(process)
            break
        time.sleep(0.005)
    process.stdout.close()
    process.wait()
    return bytes(kept), dropped, timed_out


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _with_marker(output: bytes, dropped: int) -> str:
    text = output.decode("utf-8", errors="replace")
    if dropped:
        text += f"\n[output truncated: {dropped} more bytes not shown]\n"
    return text

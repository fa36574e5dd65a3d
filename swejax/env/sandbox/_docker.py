"""The docker runtime: model-written commands in a container of the task's image.

One container per sandbox, started with no network and with memory, process, CPU and file-size
limits, kept alive by `sleep` and driven by `docker exec`. Each command runs under coreutils'
`timeout`, which kills the command's whole process group; the shell's directory and exports
persist through the same state files as the bubblewrap runtime; the editor tools are copied in.

A sandbox can start in the image's own environment (`activate`: SWE-bench images' conda env):
the activation runs once, and what it exports persists through the state files like any export.
Grading in a harness's image keeps the image's environment whole (`image_environment`), runs as
the harness's user, and may have a network, as the harness's containers do.

Containers carry the label `swejax.sandbox` and their owner (host and process id). They are
removed on close, at interpreter exit, and, for a caller that crashed, by `reap()` at the next
start-up, which removes every labelled container whose owner process is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shlex
import socket
import tarfile
import threading
import time

from swejax.env.sandbox._tools import SANDBOX_PATH, STATE_DIR, TOOLS_DIR, tool_files
from swejax.env.sandbox._types import RunResult, SandboxError, SandboxLimits

LABEL = "swejax.sandbox"
OWNER_LABEL = "swejax.owner"
_WRAPPER = f"""
cd "$(cat {STATE_DIR}/cwd 2>/dev/null || echo "$SWEJAX_WORKDIR")" 2>/dev/null ||
  cd "$SWEJAX_WORKDIR"
[ -f {STATE_DIR}/env ] && . {STATE_DIR}/env
trap 'pwd > {STATE_DIR}/cwd; export -p > {STATE_DIR}/env' EXIT
. {STATE_DIR}/command.sh
"""
_QUOTED_WRAPPER = shlex.quote(_WRAPPER)
_live: dict[str, object] = {}  # container id -> container, removed at exit if still open
_reaped = False


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _client():
    try:
        import docker
    except ImportError as error:  # a core dependency, but say what to do if it is missing
        raise SandboxError("the docker runtime needs the docker SDK: pip install docker") from error
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as error:
        raise SandboxError(f"no Docker engine reachable: {error}") from error
    return client


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap(client=None) -> list[str]:
    """Remove labelled containers whose owner process on this host is gone; their names."""
    client = client or _client()
    removed = []
    host = socket.gethostname()
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        owner_host, _, pid = container.labels.get(OWNER_LABEL, ":").partition(":")
        if owner_host == host and pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(Exception):
                container.remove(force=True)
                removed.append(container.name)
    return removed


@atexit.register
def _remove_live_containers() -> None:
    for container in list(_live.values()):
        with contextlib.suppress(Exception):
            container.remove(force=True)
    _live.clear()


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (content, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _tar_directory(directory: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(directory, arcname=".")
    return buffer.getvalue()


class DockerSandbox:
    """A container of `image`; `repo_dir`, if given, is copied to `workdir` first."""

    def __init__(
        self,
        image: str,
        repo_dir: str | None = None,
        limits: SandboxLimits | None = None,
        workdir: str = "/repo",
        *,
        activate: str = "",
        image_environment: bool = False,
        user: str = "",
        network: bool = False,
    ):
        global _reaped
        import docker

        self.limits = limits or SandboxLimits()
        self.workdir = workdir
        self.user = user
        self.repo = None  # no host copy: files go in and out through the engine
        self._client = _client()
        if not _reaped:
            reap(self._client)
            _reaped = True
        try:
            self._client.images.get(image)
        except docker.errors.ImageNotFound:
            raise SandboxError(
                f"docker image {image!r} is not present; pull it (docker pull {image}), build it "
                "(tools/build_images.py for the built-in tasks) or load it with docker load"
            ) from None
        if repo_dir is not None and not os.path.isdir(repo_dir):
            raise SandboxError(f"repository directory {repo_dir!r} does not exist")
        limits = self.limits
        environment = {"SWEJAX_STATE": STATE_DIR, "SWEJAX_WORKDIR": workdir}
        if not image_environment:
            environment.update(PATH=SANDBOX_PATH, HOME="/tmp", LANG="C.UTF-8", TERM="dumb")
        try:
            self._container = self._client.containers.run(
                image,
                command=["sleep", "infinity"],
                detach=True,
                labels={LABEL: "1", OWNER_LABEL: _owner()},
                network_mode=None if network else "none",
                mem_limit=limits.memory_bytes,
                memswap_limit=limits.memory_bytes,
                pids_limit=limits.max_processes,
                nano_cpus=int(limits.cpus * 1e9),
                ulimits=[
                    docker.types.Ulimit(
                        name="fsize", soft=limits.max_file_bytes, hard=limits.max_file_bytes
                    ),
                    docker.types.Ulimit(
                        name="cpu", soft=limits.cpu_seconds, hard=limits.cpu_seconds
                    ),
                ],
                environment=environment,
                working_dir="/",
                hostname="sandbox",
                init=True,
            )
        except docker.errors.DockerException as error:
            raise SandboxError(f"could not start a container of {image!r}: {error}") from error
        _live[self._container.id] = self._container
        self._closed = False
        try:
            self._exec(["mkdir", "-p", STATE_DIR, TOOLS_DIR, workdir], timeout=60)
            self._container.put_archive(TOOLS_DIR, _tar(tool_files()))
            if repo_dir is not None:
                self._container.put_archive(workdir, _tar_directory(repo_dir))
            if activate:
                self._activate(activate)
        except Exception:
            self.close()
            raise

    def _activate(self, command: str) -> None:
        """Run `command` once; the wrapper saves what it exports for every later command."""
        result = self.run(command, timeout=120)
        if result.exit_code != 0:
            raise SandboxError(
                f"could not enter the image's environment ({command!r}, exit "
                f"{result.exit_code}): {result.output[-500:]}"
            )

    # --- commands -------------------------------------------------------------------------

    def _exec(self, argv: list[str], timeout: float) -> tuple[bytes, int, bool]:
        """Run argv; read at most the output cap; (output, dropped bytes, exit code)."""
        api = self._client.api
        exec_id = api.exec_create(
            self._container.id, argv, stdout=True, stderr=True, user=self.user
        )["Id"]
        stream = api.exec_start(exec_id, stream=True, demux=False)
        cap = self.limits.output_bytes
        kept, dropped = bytearray(), [0]

        def pump() -> None:
            with contextlib.suppress(Exception):
                for chunk in stream:
                    room = cap - len(kept)
                    kept.extend(chunk[: max(0, room)])
                    dropped[0] += max(0, len(chunk) - max(0, room))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            raise SandboxError(f"docker exec did not finish within {timeout:.0f} s")
        exit_code = api.exec_inspect(exec_id).get("ExitCode")
        return bytes(kept), dropped[0], -1 if exit_code is None else exit_code

    def run(self, command: str, timeout: float | None = None) -> RunResult:
        """Run `command` in the shell; its output (stdout and stderr together) is capped."""
        if self._closed:
            raise SandboxError("the sandbox is closed")
        timeout = self.limits.timeout_seconds if timeout is None else timeout
        self._container.put_archive(
            STATE_DIR, _tar({"command.sh": ((command + "\n").encode(), 0o644)})
        )
        start = time.monotonic()
        # `timeout` runs the command in a process group of its own and kills that group when
        # time is up; the outer shell then kills whatever the command left behind in it, so
        # background processes die with their command, as in the bubblewrap runtime.
        inner = f"timeout --signal=KILL {timeout:g} bash --noprofile --norc -c {_QUOTED_WRAPPER}"
        argv = [
            "bash", "--noprofile", "--norc", "-c",
            f"{inner} & pid=$!; wait $pid; status=$?; "
            "kill -KILL -- -$pid 2>/dev/null; kill -KILL -- -$pid 2>/dev/null; exit $status",
        ]  # fmt: skip
        try:
            output, dropped, exit_code = self._exec(argv, timeout + 30)
        except SandboxError:
            raise
        except Exception as error:  # the engine or the container went away
            raise SandboxError(f"docker exec failed: {error}") from error
        seconds = time.monotonic() - start
        timed_out = exit_code == 137 and seconds >= timeout - 0.5
        text = output.decode("utf-8", errors="replace")
        if dropped:
            text += f"\n[output truncated: {dropped} more bytes not shown]\n"
        return RunResult(text, exit_code, timed_out, dropped, seconds)

    def write_file(self, path: str, text: str) -> None:
        """Write `text` to `path` relative to the working directory."""
        directory, name = os.path.split(os.path.join(self.workdir, path))
        self._container.put_archive(directory, _tar({name: (text.encode(), 0o644)}))

    def diff(self) -> str:
        """`git diff` of the working tree against HEAD (new files included)."""
        git = f"git -C {self.workdir}"
        result = self.run(f"{git} add -A >/dev/null 2>&1; {git} diff --cached HEAD", timeout=60)
        if result.exit_code != 0:
            raise SandboxError(f"git diff failed in the sandbox: {result.output[-500:]}")
        return result.output

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _live.pop(self._container.id, None)
            with contextlib.suppress(Exception):
                self._container.remove(force=True)

    def __enter__(self) -> DockerSandbox:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

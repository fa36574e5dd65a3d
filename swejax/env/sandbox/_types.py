"""The contract of every sandbox runtime: limits in, results out."""

from __future__ import annotations

import dataclasses
from typing import Protocol


class SandboxError(RuntimeError):
    """The sandbox itself failed, not the command in it: an infrastructure error, not a reward."""


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    timeout_seconds: float = 120.0  # per command, wall clock; the whole container is killed
    output_bytes: int = 100_000  # output kept per command; the rest is counted, not shown
    memory_bytes: int = 2 * 2**30  # address space per process
    max_processes: int = 256  # processes of the sandbox user at once (fork bombs)
    max_file_bytes: int = 512 * 2**20  # largest file a command may write
    cpu_seconds: int = 600  # CPU time per process
    cpus: float = 1.0  # CPU share of the whole sandbox (docker; the paper's pods had 0.5)


@dataclasses.dataclass(frozen=True)
class RunResult:
    output: str  # stdout and stderr interleaved, capped, with a marker saying what was cut
    exit_code: int  # negative: killed by that signal
    timed_out: bool
    output_bytes_dropped: int
    seconds: float


class Sandbox(Protocol):
    """What every runtime offers (bwrap, docker), and all an episode or a grader uses."""

    repo: str | None  # the private copy of the repository on the host (bwrap), else None

    def run(self, command: str, timeout: float | None = None) -> RunResult:
        """Run a shell command in the sandbox's persistent shell state (cwd, exports)."""
        ...

    def write_file(self, path: str, text: str) -> None: ...

    def diff(self) -> str:
        """`git diff` of the repository against its base commit, new files included."""
        ...

    def close(self) -> None:
        """Remove everything the sandbox made; safe to call twice."""
        ...

"""Sandboxes: where model-written commands run, contained, with timeouts and limits.

with open_sandbox(repo_dir, runtime="bwrap") as sb:     # or runtime="docker", image=...
    r = sb.run("pytest -q", timeout=60)      # r.output, r.exit_code, r.timed_out
    patch = sb.diff()

Both runtimes offer run, write_file, diff and close, and carry the scaffold's editor tools.
"""

from __future__ import annotations

from swejax.env.sandbox._bwrap import WORKDIR, BwrapSandbox, bwrap_available
from swejax.env.sandbox._docker import DockerSandbox, reap
from swejax.env.sandbox._types import RunResult, Sandbox, SandboxError, SandboxLimits

RUNTIMES = ("bwrap", "docker")


def open_sandbox(
    repo_dir: str | None,
    runtime: str = "bwrap",
    limits: SandboxLimits | None = None,
    image: str | None = None,
    workdir: str = WORKDIR,
    activate: str = "",
) -> BwrapSandbox | DockerSandbox:
    """A sandbox (use it as a context manager).

    bwrap: a private copy of `repo_dir` at /repo. docker: a container of `image`, with
    `repo_dir` (if given) copied to `workdir`; without it, the image's own `workdir` is used;
    `activate` (docker only) runs once at start and its exports persist for every command.
    """
    if runtime == "bwrap":
        if repo_dir is None:
            raise SandboxError("the bwrap runtime needs a repository directory")
        if activate:
            raise SandboxError(
                "the bwrap runtime runs the host's system; it has nothing to activate"
            )
        return BwrapSandbox(repo_dir, limits)
    if runtime == "docker":
        if not image:
            raise SandboxError("the docker runtime needs an image")
        return DockerSandbox(image, repo_dir, limits, workdir, activate=activate)
    raise SandboxError(f"unknown sandbox runtime {runtime!r}; choose one of {RUNTIMES}")


__all__ = [
    "RUNTIMES",
    "WORKDIR",
    "BwrapSandbox",
    "DockerSandbox",
    "RunResult",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "bwrap_available",
    "open_sandbox",
    "reap",
]

"""Sandboxes: where model-written commands run, contained, with timeouts and limits.

with open_sandbox(repo_dir, runtime="bwrap") as sb:
    r = sb.run("pytest -q", timeout=60)      # r.output, r.exit_code, r.timed_out
    patch = sb.diff()
"""

from __future__ import annotations

from swejax.env.sandbox._bwrap import WORKDIR, BwrapSandbox, bwrap_available
from swejax.env.sandbox._types import RunResult, SandboxError, SandboxLimits

RUNTIMES = ("bwrap",)


def open_sandbox(
    repo_dir: str, runtime: str = "bwrap", limits: SandboxLimits | None = None
) -> BwrapSandbox:
    """A sandbox over a private copy of `repo_dir` (use it as a context manager)."""
    if runtime == "bwrap":
        return BwrapSandbox(repo_dir, limits)
    if runtime == "docker":
        raise SandboxError("the docker runtime is not built yet in this version; use bwrap")
    raise SandboxError(f"unknown sandbox runtime {runtime!r}; choose one of {RUNTIMES}")


__all__ = [
    "WORKDIR",
    "BwrapSandbox",
    "RunResult",
    "SandboxError",
    "SandboxLimits",
    "bwrap_available",
    "open_sandbox",
]

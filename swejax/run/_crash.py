"""Fault injection: kill the process at a named point, as the crash-safety tests do."""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    """SIGKILL this process here when SWEJAX_KILL_AT names this point (`rollout:3`, `train:3`,
    `checkpoint:3`, `rft`), in every process, or only in process P with `@P` (`rft@1`). A
    SIGKILL runs no handler, no `finally` and no atexit, exactly like `kill -9`."""
    wanted = os.environ.get("SWEJAX_KILL_AT", "")
    point, _, process = wanted.partition("@")
    if not name or point != name:
        return
    if process:
        from swejax import distributed

        if int(process) != distributed.process_index():
            return
    os.kill(os.getpid(), signal.SIGKILL)

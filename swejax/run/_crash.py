"""Fault injection: kill the process at a named point, as the crash-safety tests do."""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    """SIGKILL this process here when SWEJAX_KILL_AT names this point (`rollout:3`, `train:3`,
    `checkpoint:3`, `rft`). A SIGKILL runs no handler, no `finally` and no atexit, exactly like
    `kill -9`."""
    if name and os.environ.get("SWEJAX_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)

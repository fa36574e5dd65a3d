"""A sandbox over a task's repository at its base commit, on either runtime."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from swejax.env.sandbox import SandboxError, SandboxLimits, open_sandbox
from swejax.tasks import Task, materialize


@contextlib.contextmanager
def task_sandbox(
    task: Task, runtime: str = "bwrap", limits: SandboxLimits | None = None
) -> Iterator:
    """bwrap: a fresh copy of the task's repository; docker: a container of the task's image
    (built-in tasks: tools/build_images.py), whose repository is at `task.workdir`."""
    if runtime == "docker":
        with open_sandbox(
            None, "docker", limits, image=task.docker_image, workdir=task.workdir
        ) as sandbox:
            yield sandbox
        return
    with contextlib.ExitStack() as stack:
        try:
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="swejax-task-"))
            repo = materialize(task, os.path.join(scratch, "repo"))
        except OSError as error:  # the host failed (a full disk, a lost mount), not the task
            raise SandboxError(
                f"{task.instance_id}: this host could not prepare the repository: {error}"
            ) from error
        with open_sandbox(repo, runtime, limits) as sandbox:
            yield sandbox

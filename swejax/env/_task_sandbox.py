"""A sandbox over a task's repository at its base commit, on either runtime."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from swejax.env import harness
from swejax.env.sandbox import SandboxError, SandboxLimits, open_sandbox
from swejax.tasks import Task, materialize


def docker_target(task: Task) -> tuple[str, str, str]:
    """(image, workdir, shell activation) of a task's container: for the SWE-bench family the
    harness's image (the record's, else the harness's name for it), /testbed, and the image's
    conda environment, as SWE-agent and mini-swe-agent run their shells."""
    if harness.in_swebench_family(task):
        return harness.image(task), harness.WORKDIR, harness.shell_activation(task)
    return task.docker_image, task.workdir, ""


@contextlib.contextmanager
def task_sandbox(
    task: Task, runtime: str = "bwrap", limits: SandboxLimits | None = None
) -> Iterator:
    """bwrap: a fresh copy of the task's repository; docker: a container of the task's image
    (built-in tasks: tools/build_images.py), whose repository is at its workdir."""
    if runtime == "docker":
        image, workdir, activate = docker_target(task)
        with open_sandbox(
            None, "docker", limits, image=image, workdir=workdir, activate=activate
        ) as sandbox:
            yield sandbox
        return
    if harness.in_swebench_family(task):
        raise harness.HarnessError(
            f"task {task.instance_id} runs in its SWE-bench image; the bwrap runtime cannot run "
            "it: use tasks.runtime=docker"
        )
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

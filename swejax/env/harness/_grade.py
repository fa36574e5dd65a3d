"""Grading a SWE-bench-family task as its harness's run_instance does.

In a container of the task's image, as root in /testbed: write the submission, whole, to
/tmp/patch.diff and try the harness's three apply commands in order; write its eval script to
/eval.sh and run `/bin/bash /eval.sh` under its timeout; read the log as swebench does. Nothing
of the submission is dropped: the eval script itself resets the test patch's files to the base
commit before applying the test patch.

Unlike swejax's own sandboxes, the grading container keeps the image's environment and, as the
harness's containers do, has a network (some Verified tests fetch from httpbin.org).
"""

from __future__ import annotations

from swejax.env.harness import _spec
from swejax.env.sandbox import SandboxError, SandboxLimits
from swejax.env.sandbox._docker import DockerSandbox
from swejax.env.swebench_logs import outcome_of
from swejax.tasks import Task

TIMEOUT = 1800  # run_evaluation's default --timeout, seconds
PATCH = "/tmp/patch.diff"  # the harness's DOCKER_PATCH
# The harness sets no limits; these only keep one runaway grading from taking the host.
LIMITS = SandboxLimits(
    timeout_seconds=TIMEOUT,
    output_bytes=256 * 2**20,
    memory_bytes=32 * 2**30,
    max_processes=8192,
    max_file_bytes=16 * 2**30,
    cpu_seconds=4 * TIMEOUT,
    cpus=2.0,
)


def apply_commands(task: Task) -> tuple[str, ...]:
    """run_evaluation's GIT_APPLY_CMDS, each given the patch file."""
    _spec.swebench(task)
    from swebench.harness.run_evaluation import GIT_APPLY_CMDS

    return tuple(f"{command} {PATCH}" for command in GIT_APPLY_CMDS)


def grade_in_image(task: Task, submission: str, timeout: float | None = None):
    """A GradeResult for `submission`, decided as the harness decides."""
    from swejax.env.grading import GradeResult

    tests = [*task.FAIL_TO_PASS, *task.PASS_TO_PASS]
    missing = dict.fromkeys(tests, "missing")

    def failed(message: str) -> GradeResult:
        return GradeResult(False, missing, False, (), infrastructure_error=message)

    try:
        script, image, commands = _spec.eval_script(task), _spec.image(task), apply_commands(task)
    except _spec.HarnessError as error:
        return failed(str(error))
    try:
        with DockerSandbox(
            image, None, LIMITS, _spec.WORKDIR, image_environment=True, user="root", network=True
        ) as sandbox:
            sandbox.write_file(PATCH, submission)
            for command in commands:
                applied = sandbox.run(command, timeout=600)
                if applied.exit_code == 0:
                    break
            else:  # the harness's APPLY_PATCH_FAIL: unresolved, the submission's fault
                return GradeResult(False, missing, False, (), log=applied.output[-5000:])
            sandbox.write_file("/eval.sh", script)
            result = sandbox.run("/bin/bash /eval.sh", timeout=timeout or TIMEOUT)
    except SandboxError as error:
        return failed(str(error))
    log = result.output
    if result.timed_out:  # the harness stops there: no report, unresolved
        return GradeResult(False, missing, True, (), log=log[-5000:])
    try:
        resolved, status, _ = _spec.read_log(task, log)
    except _spec.HarnessError as error:
        return failed(str(error))
    outcomes = {test: outcome_of(status.get(test)) for test in tests}
    return GradeResult(resolved, outcomes, True, (), log=log[-5000:])

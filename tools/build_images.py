"""Build the docker images of the built-in tasks (or of a synthesized set), with no registry.

    python tools/build_images.py                 # base image, then one image per built-in task
    python tools/build_images.py --base-only
    python tools/build_images.py --only swejax__b_roman_repeat,swejax__a_duration_days
    python tools/build_images.py --tasks tasks.jsonl   # a synthesized set (python -m swejax.main
                                                       # synthesize): one image per repo_dir

The base image (`swejax/base:bookworm`) is a Debian root filesystem made by debootstrap (minbase,
plus Python 3, pytest and git) and loaded with `docker import`. A task image
(`swejax/task:<instance_id>`) is the base with the task's repository committed in /repo. A task
that names its own image (SWE-bench / SWE-rebench) is not built here; the docker runtime reports
a missing image by name.

Needs root, debootstrap and a running Docker engine. Prints one JSON object of what it built.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import docker

from swejax.tasks import TaskError, builtin_tasks, load_jsonl, materialize

BASE_IMAGE = "swejax/base:bookworm"
PACKAGES = "python3,python3-pytest,git,ca-certificates,procps"


def task_image(instance_id: str) -> str:
    return f"swejax/task:{instance_id.lower()}"


def build_base(client, mirror: str, suite: str) -> float:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="swejax-rootfs-") as rootfs:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", suite, rootfs, mirror],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(["rm", "-rf", f"{rootfs}/var/cache/apt/archives"], check=True)
        archive = subprocess.run(
            ["tar", "-C", rootfs, "-c", "."], check=True, stdout=subprocess.PIPE
        ).stdout
    repository, tag = BASE_IMAGE.split(":")
    client.api.import_image_from_data(archive, repository=repository, tag=tag)  # docker import
    return time.perf_counter() - start


def _tar_directory(directory: str, arcname: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(directory, arcname=arcname)
    return buffer.getvalue()


def build_task(client, task) -> str:
    """The base image with the task's repository (a git repository at its base commit) in /repo."""
    with tempfile.TemporaryDirectory(prefix="swejax-image-") as scratch:
        repo = materialize(task, os.path.join(scratch, "repo"))
        container = client.containers.create(BASE_IMAGE, command=["true"])
        try:
            container.put_archive("/", _tar_directory(repo, "repo"))
            repository, tag = task_image(task.instance_id).split(":")
            container.commit(repository=repository, tag=tag, changes=["WORKDIR /repo"])
        finally:
            container.remove(force=True)
    return task_image(task.instance_id)


def tasks_to_build(tasks_file: str, only: str) -> list:
    """The tasks whose images to build: the built-in ones, or those of a JSONL file that carry
    their repository (`repo_dir`; records that name their own image are not built here),
    narrowed to `only` (comma-separated ids). A TaskError names what is wrong."""
    tasks = load_jsonl(tasks_file) if tasks_file else builtin_tasks()
    tasks = [t for t in tasks if t.repo_dir]
    if tasks_file and not tasks:
        raise TaskError(f"{tasks_file} has no task with a repo_dir to build an image from")
    wanted = set(filter(None, only.split(",")))
    missing = wanted - {t.instance_id for t in tasks}
    if missing:
        raise TaskError(f"unknown task ids {sorted(missing)}")
    return [t for t in tasks if not wanted or t.instance_id in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-only", action="store_true")
    parser.add_argument("--rebuild-base", action="store_true", help="even if it exists")
    parser.add_argument("--only", default="", help="comma-separated instance ids")
    parser.add_argument(
        "--tasks", default="", metavar="FILE", help="a JSONL of tasks with repo_dir (synthesize)"
    )
    parser.add_argument("--mirror", default="http://deb.debian.org/debian")
    parser.add_argument("--suite", default="bookworm")
    args = parser.parse_args(argv)
    try:
        tasks = [] if args.base_only else tasks_to_build(args.tasks, args.only)
    except TaskError as error:
        print(f"build_images: error: {error}", file=sys.stderr)
        return 2

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        print(f"build_images: error: no Docker engine: {error}", file=sys.stderr)
        return 2
    report: dict = {"base": BASE_IMAGE, "tasks": []}
    have_base = bool(client.images.list(name=BASE_IMAGE))
    if args.rebuild_base or not have_base:
        report["base_seconds"] = build_base(client, args.mirror, args.suite)
    for task in tasks:
        report["tasks"].append(build_task(client, task))
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A package's source distribution, from the package index through pip, unpacked."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

from swejax.errors import UserError

_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")
_ARCHIVES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")


@dataclasses.dataclass(frozen=True)
class Package:
    name: str  # as the user wrote it (pip matches names case- and separator-insensitively)
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def slug(self) -> str:
        """The name in instance ids and paths: lower case, runs of . _ - as one -."""
        return re.sub(r"[-_.]+", "-", self.name).lower()


def parse_requirement(text: str) -> Package:
    """NAME==VERSION, pinned: the same command must give the same tasks."""
    match = _REQUIREMENT.match(text.strip())
    if not match:
        raise UserError(f"--package wants NAME==VERSION with an exact version, got {text!r}")
    return Package(match.group(1), match.group(2))


def download_sdist(package: Package, destination: str) -> str:
    """The sdist's archive in `destination` (pip download; the only network use of synthesize)."""
    os.makedirs(destination, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--disable-pip-version-check", "-q", "-d", destination, package.requirement,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    archives = sorted(f for f in os.listdir(destination) if f.endswith(_ARCHIVES))
    if result.returncode != 0 or not archives:
        last = (result.stderr.strip().splitlines() or ["no archive downloaded"])[-1]
        raise UserError(f"pip cannot download the sdist of {package.requirement}: {last}")
    return os.path.join(destination, archives[0])


def unpack(archive: str, destination: str) -> str:
    """Unpack an sdist into `destination`; returns its single top folder (the repository)."""
    os.makedirs(destination, exist_ok=True)
    if archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(destination)
    else:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.10.12+: no links out, no devices
                tar.extractall(destination, filter="data")
            else:
                tar.extractall(destination)
    entries = [e for e in os.listdir(destination) if not e.startswith(".")]
    if len(entries) == 1 and os.path.isdir(os.path.join(destination, entries[0])):
        root = os.path.join(destination, entries[0])
    else:
        root = destination
    for base, dirs, _ in os.walk(root):
        for name in [d for d in dirs if d == "__pycache__"]:
            shutil.rmtree(os.path.join(base, name))
            dirs.remove(name)
    return root

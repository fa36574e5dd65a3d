"""Write a family of one-decision tasks for DAPO studies, as a JSONL file with repositories.

    python tools/task_family.py OUT_DIR [--size 8]
    python -m swejax.main --config.tasks.source=OUT_DIR/tasks.jsonl --config.tasks.train= ...

Every task shares one small repository (`retry/policy.py` holds `MAX_ATTEMPTS = 1`) and its
gold patch is one line, `MAX_ATTEMPTS = N`; each task's issue tells its own story asking for a
different N (2..9). Demonstrations therefore share their whole format and differ in one
decision token, so a policy that learned the format fails by choosing the wrong N: the regime
in which DAPO's negative samples carry information (docs/stability.md, the f runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

from swejax.synth._patch import file_diff

POLICY = "retry/policy.py"
TEST_FILE = "tests/test_policy.py"
INIT = '''"""How many times a call may be attempted."""

from retry.policy import MAX_ATTEMPTS


def attempts_left(used):
    """Attempts still allowed after `used` of them."""
    return max(MAX_ATTEMPTS - used, 0)
'''
TESTS = """from retry import attempts_left


def test_never_negative():
    assert attempts_left(100) == 0
"""
F2P_TEST = """

def test_first_call_allows_{n}():
    assert attempts_left(0) == {n}
"""

# One story per N: who asks, and why that many attempts.
STORIES = {
    2: "Our payment gateway double-charges if we retry more than once, so product asked for "
    "exactly one retry after the first try: {n} attempts in total.",
    3: "The mobile client gives up too early on flaky train wifi. Support wants the classic "
    "three strikes rule: {n} attempts before an error is shown.",
    4: "The nightly backup job to the tape library fails when the robot arm is busy. Ops asked "
    "for {n} attempts, one per tape drive.",
    5: "Webhook deliveries to partner systems are dropped after one failure. The partner "
    "contract says we must try {n} times, once per business day of the week.",
    6: "The sensor gateway on the factory floor reboots every few minutes. The plant engineer "
    "measured that {n} attempts cover a full reboot cycle.",
    7: "Our DNS resolver times out under load during the weekly sale. The SRE team wants {n} "
    "attempts, one for each day the sale runs.",
    8: "The satellite uplink loses packets during storms. The field team asked for {n} "
    "attempts, matching the eight antennas of the dish array.",
    9: "Batch uploads to the archive fail while the storage cluster rebalances. The storage "
    "team says {n} attempts, one per storage node, always get through.",
}
ISSUE = """# Calls are attempted only once

`attempts_left(0)` returns 1: every call is attempted a single time and never retried.

{story}

Expected: `attempts_left(0) == {n}`.
"""


def _write(root: str, path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
    with open(os.path.join(root, path), "w", encoding="utf-8") as f:
        f.write(text)


def write_family(out: str, size: int = 8) -> str:
    """Write OUT/repo and OUT/tasks.jsonl (tasks N = 2 .. size + 1); returns the JSONL path."""
    if not 1 <= size <= len(STORIES):
        raise SystemExit(f"--size must be between 1 and {len(STORIES)}, got {size}")
    repo = os.path.join(out, "repo")
    if os.path.exists(repo):
        shutil.rmtree(repo)
    files = {POLICY: "MAX_ATTEMPTS = 1\n", "retry/__init__.py": INIT, TEST_FILE: TESTS}
    for path, text in files.items():
        _write(repo, path, text)
    records = []
    for n in sorted(STORIES)[:size]:
        test = f"{TEST_FILE}::test_first_call_allows_{n}"
        records.append(
            {
                "instance_id": f"family__attempts_{n}",
                "repo": "swejax-family/retry",
                "base_commit": "base",
                "problem_statement": ISSUE.format(story=STORIES[n].format(n=n), n=n),
                "patch": file_diff(POLICY, files[POLICY], f"MAX_ATTEMPTS = {n}\n"),
                "test_patch": file_diff(TEST_FILE, TESTS, TESTS + F2P_TEST.format(n=n)),
                "FAIL_TO_PASS": [test],
                "PASS_TO_PASS": [f"{TEST_FILE}::test_never_negative"],
                "repo_dir": "repo",
            }
        )
    path = os.path.join(out, "tasks.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write repo/ and tasks.jsonl into")
    parser.add_argument("--size", type=int, default=8, help="how many tasks (N = 2 .. size+1)")
    args = parser.parse_args()
    print(write_family(args.out, args.size))


if __name__ == "__main__":
    main()

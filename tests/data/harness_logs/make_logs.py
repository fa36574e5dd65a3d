"""Make the real test logs tests/test_harness.py reads: real test runs, framed as the SWE-bench
harness's /eval.sh frames them (bash -x, the test command between the `: '>>>>> Start Test
Output'` and `: '>>>>> End Test Output'` markers, stdout and stderr together).

    python tests/data/harness_logs/make_logs.py --django-sdist Django-4.2.20.tar.gz

- pytest_*.log: `pytest -rA` (pytest-dev's test_cmd) over the small suite below: all pass; a
  bug that fails test_add; a test that prints the harness's APPLY_PATCH_FAIL marker.
- django_*.log: Django 4.2.20's own `./tests/runtests.py --verbosity 2 --settings=test_sqlite
  --parallel 1 urlpatterns.test_resolvers` (django__django-11333's command), from the sdist
  (downloaded with pip if not given; asgiref and sqlparse installed beside it): as released,
  and with RegexPattern.__str__ broken.
- sympy_pass.log: sympy's own runner (what bin/test runs) in verbose mode without colors, over
  sympy/sets/tests/test_contains.py of the installed sympy.

Paths of the machine that made them are replaced with /testbed and `python`.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE = {
    "calc.py": (
        "import os\n\n\ndef add(a, b):\n"
        '    return a + b + (1 if os.environ.get("SWEJAX_BUG") else 0)\n\n\n'
        "def sub(a, b):\n    return a - b\n"
    ),
    "test_calc.py": (
        "import os\n\nimport pytest\n\nfrom calc import add, sub\n\n\n"
        "def test_add():\n    assert add(2, 3) == 5\n\n\n"
        "def test_sub():\n    assert sub(5, 3) == 2\n\n\n"
        '@pytest.mark.parametrize("a,b", [(1, 2), (3, 4)])\n'
        "def test_commutes(a, b):\n    assert add(a, b) == add(b, a)\n\n\n"
        "def test_report():\n"
        '    print(os.environ.get("SWEJAX_PRINT", "nothing to report"))\n'
    ),
}


def framed(command: str, cwd: str, env: dict[str, str]) -> str:
    """The output of `command` run as the harness's eval script runs its test command."""
    script = "\n".join(
        [
            "set -uxo pipefail",
            f"cd {cwd}",
            ": '>>>>> Start Test Output'",
            command,
            ": '>>>>> End Test Output'",
            "",
        ]
    )
    run = subprocess.run(
        ["bash", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    return run.stdout


def clean(log: str, folder: str) -> str:
    for path, name in ((folder, "/testbed"), (sys.executable, "python"), (sys.prefix, "/env")):
        log = log.replace(path, name)
    return log


def pytest_logs(folder: str) -> dict[str, str]:
    for name, text in SUITE.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    command = f"{sys.executable} -m pytest -rA -p no:cacheprovider -p no:xdist test_calc.py"
    runs = {
        "pytest_pass.log": {},
        "pytest_fail.log": {"SWEJAX_BUG": "1"},
        "pytest_marker.log": {"SWEJAX_PRINT": ">>>>> Patch Apply Failed"},
    }
    return {name: clean(framed(command, folder, env), folder) for name, env in runs.items()}


def django_logs(sdist: str, folder: str) -> dict[str, str]:
    if not sdist:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "Django==4.2.20", "-d", folder],
            check=True,
        )  # fmt: skip
        (sdist,) = glob.glob(os.path.join(folder, "Django-*.tar.gz"))
    deps = os.path.join(folder, "deps")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", deps, "asgiref>=3.6,<4",
         "sqlparse>=0.3.1"],
        check=True,
    )  # fmt: skip
    with tarfile.open(sdist) as archive:
        archive.extractall(folder, filter="data")
    (source,) = glob.glob(os.path.join(folder, "Django-*/"))
    source = source.rstrip("/")
    command = (
        f"{sys.executable} ./tests/runtests.py --verbosity 2 --settings=test_sqlite "
        "--parallel 1 urlpatterns.test_resolvers"
    )
    env = {"PYTHONPATH": f"{source}:{deps}"}
    logs = {"django_pass.log": clean(framed(command, source, env), source)}
    resolvers = os.path.join(source, "django", "urls", "resolvers.py")
    with open(resolvers) as f:
        text = f.read()
    broken = "    def __str__(self):\n        return str(self._regex)\n"
    assert broken in text, "RegexPattern.__str__ moved in this Django"
    with open(resolvers, "w") as f:
        f.write(text.replace(broken, '    def __str__(self):\n        return "broken"\n'))
    logs["django_fail.log"] = clean(framed(command, source, env), source)
    return logs


def sympy_logs(folder: str) -> dict[str, str]:
    command = (
        f'{sys.executable} -c "import sys; from sympy.testing.runtests import test; '
        "sys.exit(not test('sympy/sets/tests/test_contains.py', verbose=True, colors=False, "
        'subprocess=False))"'
    )
    return {"sympy_pass.log": clean(framed(command, folder, {}), folder)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--django-sdist", default="", help="Django-4.2.20.tar.gz (else pip)")
    parser.add_argument("--out", default=HERE)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        logs = {}
        for make in (pytest_logs, sympy_logs):
            sub = os.path.join(folder, make.__name__)
            os.makedirs(sub)
            logs.update(make(sub))
        logs.update(django_logs(options.django_sdist, os.path.join(folder, "django")))
    for name, log in logs.items():
        with open(os.path.join(options.out, name), "w") as f:
            f.write(log)
        print(f"{name}: {len(log)} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Named task sets: instance ids to select from a loaded task source."""

from __future__ import annotations

_VERIFIED_50 = {
    "sympy__sympy": "22080 13615 14248 16792 17139 14531 19346 15017 13852",
    "django__django": (
        "15315 11333 11532 16642 14855 13089 15987 14725 15280 16560 15103 14007 11880 16136 "
        "16661 10880 11265 13417 15368 11095 15554 15863 13363 14017"
    ),
    "matplotlib__matplotlib": "20826 23299 25332 24870",
    "sphinx-doc__sphinx": "8721 8595 9229",
    "pylint-dev__pylint": "4604 4661",
    "pytest-dev__pytest": "7982 5809",
    "scikit-learn__scikit-learn": "13142 13135",
    "psf__requests": "2317",
    "pydata__xarray": "6744 6461 6992",
}

# The paper's fixed random subset of SWE-bench Verified used to track training (SPEC.md).
VERIFIED_50 = tuple(
    f"{repo}-{number}" for repo, numbers in _VERIFIED_50.items() for number in numbers.split()
)
TASK_SETS = {"verified-50": VERIFIED_50}

"""Minimal semantic version parsing and comparison (semver.org 2.0)."""
import re
from functools import total_ordering

_PATTERN = re.compile(
    r"^(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+(?P<build>[0-9A-Za-z.-]+))?$"
)


class InvalidVersion(ValueError):
    """Raised when a string is not a valid semantic version."""


def _cmp(a, b):
    return (a > b) - (a < b)


def _compare_identifiers(a, b):
    a_num, b_num = a.isdigit(), b.isdigit()
    if a_num and b_num:
        return _cmp(int(a), int(b))
    if a_num:
        return -1
    if b_num:
        return 1
    return _cmp(a, b)


def _compare_prerelease(a, b):
    """Compare two pre-release strings; an empty string means "no pre-release"."""
    if a == b:
        return 0
    if not a:
        return -1
    if not b:
        return 1
    a_parts, b_parts = a.split("."), b.split(".")
    for x, y in zip(a_parts, b_parts):
        result = _compare_identifiers(x, y)
        if result:
            return result
    return _cmp(len(a_parts), len(b_parts))


@total_ordering
class Version:
    def __init__(self, major, minor, patch, pre="", build=""):
        self.major = major
        self.minor = minor
        self.patch = patch
        self.pre = pre
        self.build = build

    def compare(self, other):
        core = _cmp(
            (self.major, self.minor, self.patch),
            (other.major, other.minor, other.patch),
        )
        if core:
            return core
        return _compare_prerelease(self.pre, other.pre)

    def __eq__(self, other):
        if not isinstance(other, Version):
            return NotImplemented
        return self.compare(other) == 0

    def __lt__(self, other):
        if not isinstance(other, Version):
            return NotImplemented
        return self.compare(other) < 0

    def __hash__(self):
        return hash((self.major, self.minor, self.patch, self.pre))

    def __str__(self):
        text = "%d.%d.%d" % (self.major, self.minor, self.patch)
        if self.pre:
            text += "-" + self.pre
        if self.build:
            text += "+" + self.build
        return text

    def __repr__(self):
        return "Version(%r)" % str(self)


def parse(text):
    match = _PATTERN.match(text.strip())
    if not match:
        raise InvalidVersion("invalid version: %r" % text)
    return Version(
        int(match.group("major")),
        int(match.group("minor")),
        int(match.group("patch")),
        match.group("pre") or "",
        match.group("build") or "",
    )


def compare(a, b):
    """Return -1, 0 or 1 as version string a is lower, equal or higher than b."""
    return parse(a).compare(parse(b))

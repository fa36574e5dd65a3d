"""Per-test outcomes from pytest's JUnit XML report, keyed by pytest node id."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def _node_id(classname: str, name: str, file: str | None) -> str:
    """pytest writes classname "tests.test_x" (or "tests.test_x.TestClass") and name "test_y"."""
    if file:
        module_path = file
        inner = classname.split(".")[len(file[: -len(".py")].split("/")) :]
    else:
        parts = classname.split(".")
        # Module parts are lower-case by convention; a capitalised part starts the classes.
        split = next((i for i, p in enumerate(parts) if p[:1].isupper()), len(parts))
        module_path = "/".join(parts[:split]) + ".py"
        inner = parts[split:]
    return "::".join([module_path, *inner, name])


def parse_junit(xml_text: str) -> dict[str, str]:
    """{node id: "passed" | "failed" | "error" | "skipped"} for every test case in the report."""
    root = ET.fromstring(xml_text)
    outcomes: dict[str, str] = {}
    for case in root.iter("testcase"):
        node = _node_id(case.get("classname", ""), case.get("name", ""), case.get("file"))
        children = {child.tag for child in case}
        if "failure" in children:
            outcome = "failed"
        elif "error" in children:
            outcome = "error"
        elif "skipped" in children:
            outcome = "skipped"
        else:
            outcome = "passed"
        outcomes[node] = outcome
    return outcomes

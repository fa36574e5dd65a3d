"""The SWE-bench family's harnesses, reproduced with swebench 4.1.0's own functions: which
harness a task follows, its eval script, image and log parser, and grading in its image."""

from swejax.env.harness._grade import TIMEOUT, apply_commands, grade_in_image
from swejax.env.harness._spec import (
    ACTIVATE,
    SWEBENCH_VERSION,
    WORKDIR,
    Harness,
    HarnessError,
    eval_script,
    harness_of,
    image,
    in_swebench_family,
    install_config,
    log_parser,
    parser_named,
    read_log,
    shell_activation,
    test_spec,
)

__all__ = [
    "ACTIVATE",
    "SWEBENCH_VERSION",
    "TIMEOUT",
    "WORKDIR",
    "Harness",
    "HarnessError",
    "apply_commands",
    "eval_script",
    "grade_in_image",
    "harness_of",
    "image",
    "in_swebench_family",
    "install_config",
    "log_parser",
    "parser_named",
    "read_log",
    "shell_activation",
    "test_spec",
]

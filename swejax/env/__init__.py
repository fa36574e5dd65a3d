"""The SWE environment: sandboxes (and, later, the scaffold and grading)."""

from swejax.env.sandbox import RunResult, SandboxError, SandboxLimits, open_sandbox

__all__ = ["RunResult", "SandboxError", "SandboxLimits", "open_sandbox"]

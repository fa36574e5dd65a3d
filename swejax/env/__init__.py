"""The SWE environment: sandboxes (`swejax.env.sandbox`), the scaffold (`swejax.env.scaffold`)
and grading (`swejax.env.grading`)."""

from swejax.env.sandbox import RunResult, SandboxError, SandboxLimits, open_sandbox

__all__ = ["RunResult", "SandboxError", "SandboxLimits", "open_sandbox"]

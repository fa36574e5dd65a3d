"""The agent-computer interface of SPEC.md (so far: reading replies)."""

from swejax.env.scaffold._reply import FORMAT_ERROR_MESSAGE, Action, FormatError, parse_reply

__all__ = ["FORMAT_ERROR_MESSAGE", "Action", "FormatError", "parse_reply"]

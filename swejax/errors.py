"""The one error type a user of the command line sees as a single line."""


class UserError(ValueError):
    """A mistake in the command, the config or an input file (a task file, a checkpoint, a
    run directory): `python -m swejax.main` reports it as one line `swejax: error: ...` with
    exit code 2 and no traceback. Anything else that escapes is a bug and keeps its traceback."""

"""Reading model replies: one command block, or a format error that says what was wrong."""

from swejax.env.scaffold import Action, FormatError, parse_reply


def test_one_block_gives_thought_and_command():
    reply = "The test imports calc.\nLet me look.\n```command\ncat calc.py\n```\n"
    assert parse_reply(reply) == Action("The test imports calc.\nLet me look.", "cat calc.py")


def test_multiline_command_with_heredoc_is_kept_verbatim():
    reply = "Fix it.\n```command\nedit 3:4 << 'EOF'\n    return a + b\nEOF\n```"
    action = parse_reply(reply)
    assert isinstance(action, Action)
    assert action.command == "edit 3:4 << 'EOF'\n    return a + b\nEOF"


def test_other_code_blocks_in_the_reasoning_are_allowed():
    reply = "The bug:\n```python\nx = a - b\n```\n```command\npython3 -m pytest -q\n```"
    assert parse_reply(reply) == Action(
        "The bug:\n```python\nx = a - b\n```", "python3 -m pytest -q"
    )


def test_format_errors_name_the_problem():
    none = parse_reply("I think the bug is in calc.py.")
    two = parse_reply("```command\nls\n```\n```command\npwd\n```")
    unclosed = parse_reply("```command\nls\n")
    empty = parse_reply("```command\n\n```")
    assert isinstance(none, FormatError) and "no command block" in none.problem
    assert isinstance(two, FormatError) and "2 command blocks" in two.problem
    assert isinstance(unclosed, FormatError) and "never closed" in unclosed.problem
    assert isinstance(empty, FormatError) and "empty" in empty.problem
    assert "```command" in none.message and "no command block" in none.message

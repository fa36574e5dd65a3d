"""The built-in tokenizer and turn-by-turn ChatML rendering against transformers' chat template."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from swejax.tokenizer import (
    BUILTIN_TOKENIZER_DIR,
    ROLES,
    ChatTokens,
    endoftext_id,
    generation_prompt,
    im_end_id,
    im_start_id,
    load_tokenizer,
    render_conversation,
    render_sampled_turn,
    render_turn,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
BPE_VOCAB_SIZE = 2800  # the shipped tokenizer; the special tokens follow it

PATCH_THOUGHT = """THOUGHT: The loop never flushes the last line. I'll fix it:

```bash
python - <<'EOF'
def wrap(words, width):
    lines, current = [], []
    for word in words:
\tif len(" ".join(current + [word])) > width:
            lines.append(" ".join(current))
            current = []
        current.append(word)

    if current:  # the fix
        lines.append(" ".join(current))
    return lines
EOF
```"""

OBSERVATION = (
    "Traceback (most recent call last):\n"
    '  File "/repo/wrap.py", line 12, in <module>\n'
    '    print(wrap(["Grüße", "naïve", "日本語", "🚀"], 7))\n'
    "KeyError: 'ß'\n"
    "  \ttrailing whitespace   \n"
    "\r\n"
    "exit code: 1\n"
)

CONVERSATIONS = {
    "single_exchange": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "hi"},
    ],
    "agent_episode": [
        {"role": "system", "content": "You solve software tasks.\nOne bash block per reply."},
        {"role": "user", "content": "<issue>\nwrap() drops the last word.\n</issue>"},
        {"role": "assistant", "content": "THOUGHT: look first.\n\n```bash\nls -la\n```"},
        {"role": "observation", "content": "total 8\n-rw-r--r-- 1 root root 312 wrap.py\n"},
        {"role": "assistant", "content": PATCH_THOUGHT},
        {"role": "observation", "content": OBSERVATION},
        {"role": "assistant", "content": "    indented reply with trailing spaces   "},
        {"role": "observation", "content": ""},
        {"role": "assistant", "content": "Ünïcödé: e\u0301 Привет 你好 ✓ 🎉\n\n\nCOMPLETE"},
    ],
    "empty_and_whitespace_turns": [
        {"role": "user", "content": " "},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "\t"},
        {"role": "assistant", "content": "x\n\n"},
    ],
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def _template_ids(tokenizer, messages, add_generation_prompt: bool) -> list[int]:
    """transformers' rendering of the whole conversation, with observations as ChatML user turns."""
    chatml = [
        {"role": "user" if m["role"] == "observation" else m["role"], "content": m["content"]}
        for m in messages
    ]
    out = tokenizer.apply_chat_template(
        chatml, tokenize=True, add_generation_prompt=add_generation_prompt
    )
    # transformers 5 returns a BatchEncoding by default, 4.x a list of ids.
    ids = out if isinstance(out, list) else out["input_ids"]
    return list(ids)


def _masked_runs(tokens: ChatTokens) -> list[list[int]]:
    """The maximal runs of consecutive ids that are in the loss."""
    runs: list[list[int]] = []
    previous = False
    for token_id, in_loss in zip(tokens.ids, tokens.loss_mask, strict=True):
        if in_loss and not previous:
            runs.append([])
        if in_loss:
            runs[-1].append(token_id)
        previous = in_loss
    return runs


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_turn_by_turn_ids_equal_chat_template(tokenizer, name, add_generation_prompt):
    messages = CONVERSATIONS[name]
    rendered = render_conversation(tokenizer, messages, add_generation_prompt)
    assert rendered.ids == _template_ids(tokenizer, messages, add_generation_prompt)


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_loss_mask_is_exactly_assistant_content_and_im_end(tokenizer, name):
    messages = CONVERSATIONS[name]
    rendered = render_conversation(tokenizer, messages, add_generation_prompt=True)
    decoded_runs = [tokenizer.decode(run) for run in _masked_runs(rendered)]
    expected = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    assert decoded_runs == expected
    # Every masked run ends on the stop token, and nothing after the last one is trained.
    assert all(run[-1] == im_end_id(tokenizer) for run in _masked_runs(rendered))
    assert not any(rendered.loss_mask[-len(generation_prompt(tokenizer)) :])


def test_turn_layout_and_mask_positions(tokenizer):
    turn = render_turn(tokenizer, "assistant", "ok")
    content = tokenizer.encode("ok", add_special_tokens=False)
    header = generation_prompt(tokenizer)
    newline = tokenizer.encode("\n", add_special_tokens=False)
    assert turn.ids == header + content + [im_end_id(tokenizer)] + newline
    expected_mask = [False] * len(header) + [True] * (len(content) + 1) + [False] * len(newline)
    assert turn.loss_mask == expected_mask
    assert tokenizer.decode(header) == "<|im_start|>assistant\n"


@pytest.mark.parametrize("role", ["system", "user", "observation"])
def test_non_assistant_turns_carry_no_loss(tokenizer, role):
    turn = render_turn(tokenizer, role, "some text\n  more")
    assert len(turn.ids) == len(turn.loss_mask) > 0
    assert not any(turn.loss_mask)


def test_observation_is_a_chatml_user_turn(tokenizer):
    observation = render_turn(tokenizer, "observation", "exit code: 0")
    assert observation == render_turn(tokenizer, "user", "exit code: 0")
    assert tokenizer.decode(observation.ids) == "<|im_start|>user\nexit code: 0<|im_end|>\n"


@pytest.mark.parametrize("content", ["\nleading newline", "  \n\nx", "\r\n\r\nwindows"])
def test_leading_line_breaks_keep_the_text(tokenizer, content):
    # The one place turn-by-turn ids may differ from whole-string tokenization: the content's
    # leading line breaks are tokenized apart from the header's "\n". The text must not change.
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": content}]
    rendered = render_conversation(tokenizer, messages)
    assert tokenizer.decode(rendered.ids) == tokenizer.decode(
        _template_ids(tokenizer, messages, False)
    )
    turn = render_turn(tokenizer, "assistant", content)
    content_ids = turn.ids[len(generation_prompt(tokenizer)) :]
    assert content_ids[: -len(tokenizer.encode("<|im_end|>\n", add_special_tokens=False))] == (
        tokenizer.encode(content, add_special_tokens=False)
    )


def test_control_token_text_in_content_stays_text(tokenizer):
    content = 'cat tokenizer_config.json\n"eos_token": "<|im_end|>" <|im_start|><|endoftext|>'
    turn = render_turn(tokenizer, "observation", content)
    assert turn.ids.count(im_end_id(tokenizer)) == 1  # only the real closing token
    assert turn.ids.count(im_start_id(tokenizer)) == 1
    assert endoftext_id(tokenizer) not in turn.ids
    assert tokenizer.decode(turn.ids) == f"<|im_start|>user\n{content}<|im_end|>\n"


def test_sampled_ids_are_kept_as_sampled(tokenizer):
    # "hello" spelled byte by byte: a valid but non-canonical spelling a sampler may produce.
    byte_ids = [tokenizer.convert_tokens_to_ids(char) for char in "hello"]
    assert byte_ids != tokenizer.encode("hello", add_special_tokens=False)
    turn = render_sampled_turn(tokenizer, [*byte_ids, im_end_id(tokenizer)])
    assert _masked_runs(turn) == [[*byte_ids, im_end_id(tokenizer)]]
    assert tokenizer.decode(turn.ids) == "<|im_start|>assistant\nhello<|im_end|>\n"

    canonical = [*tokenizer.encode("hello", add_special_tokens=False), im_end_id(tokenizer)]
    assert render_sampled_turn(tokenizer, canonical) == render_turn(tokenizer, "assistant", "hello")


def test_truncated_sample_is_left_unclosed(tokenizer):
    truncated = tokenizer.encode("def f(", add_special_tokens=False)
    turn = render_sampled_turn(tokenizer, truncated)
    assert turn.ids == generation_prompt(tokenizer) + truncated
    assert turn.loss_mask == [False] * len(generation_prompt(tokenizer)) + [True] * len(truncated)


ROUND_TRIP_TEXTS = [
    "",
    "plain ascii text",
    "def f(x):\n\treturn x  # tab\n\n\n    spaces   \r\n",
    "Grüße, naïve café — “quotes” … 日本語 中文 한국어 العربية עברית",
    "e\u0301 vs \u00e9 (decomposed and composed stay as written)",
    "emoji 🚀🎉👍🏽 and ZWJ 👩‍💻, flags 🇩🇪",
    "control \x00\x01\x1b[31mred\x1b[0m \x7f and a BOM \ufeff",
    "digits 1234567890 and 3.14159e-10",
    "  leading and trailing whitespace  \n",
]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_decode_encode_round_trips(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    turn = render_turn(tokenizer, "assistant", text)
    trained = [i for i, in_loss in zip(turn.ids, turn.loss_mask, strict=True) if in_loss]
    assert tokenizer.decode(trained) == text + "<|im_end|>"


def test_special_tokens_are_single_ids_after_the_bpe_vocab(tokenizer):
    for token, expected_id in [
        ("<|endoftext|>", BPE_VOCAB_SIZE),
        ("<|im_start|>", BPE_VOCAB_SIZE + 1),
        ("<|im_end|>", BPE_VOCAB_SIZE + 2),
    ]:
        assert tokenizer.encode(token, add_special_tokens=False) == [expected_id]
    assert (endoftext_id(tokenizer), im_start_id(tokenizer), im_end_id(tokenizer)) == (
        BPE_VOCAB_SIZE,
        BPE_VOCAB_SIZE + 1,
        BPE_VOCAB_SIZE + 2,
    )
    assert len(tokenizer) == BPE_VOCAB_SIZE + 3
    assert tokenizer.eos_token_id == im_end_id(tokenizer)
    assert tokenizer.pad_token_id == endoftext_id(tokenizer)


def test_bad_role_names_role_and_allowed_roles(tokenizer):
    with pytest.raises(ValueError, match=r"'tool'.*system, user, assistant, observation"):
        render_turn(tokenizer, "tool", "x")
    assert ROLES == ("system", "user", "assistant", "observation")


def test_message_without_content_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="message 1 needs 'role' and 'content'"):
        render_conversation(tokenizer, [{"role": "user", "content": "a"}, {"role": "user"}])


def test_chat_tokens_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in length: 2 != 1"):
        ChatTokens([1, 2], [True])


def test_load_from_a_directory(tmp_path):
    shutil.copytree(BUILTIN_TOKENIZER_DIR, tmp_path / "checkpoint")
    loaded = load_tokenizer(str(tmp_path / "checkpoint"))
    builtin = load_tokenizer("")
    text = "load me: ✓"
    assert loaded.encode(text) == builtin.encode(text)
    assert loaded.chat_template == builtin.chat_template


def test_missing_directory_names_the_path(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(FileNotFoundError, match="no_such_checkpoint"):
        load_tokenizer(missing)


def test_directory_without_tokenizer_files_names_the_path(tmp_path):
    (tmp_path / "weights_only").mkdir()
    (tmp_path / "weights_only" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no tokenizer files in .*weights_only"):
        load_tokenizer(tmp_path / "weights_only")


def _build_script():
    spec = importlib.util.spec_from_file_location(
        "build_tokenizer", REPO_ROOT / "tools" / "build_tokenizer.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tokenizer_without_chatml_tokens_is_rejected(tmp_path):
    build = _build_script()
    out = tmp_path / "plain_bpe"
    out.mkdir()
    build.untrained_tokenizer().save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}')
    with pytest.raises(ValueError, match=r"no single token '<\|im_start\|>'"):
        load_tokenizer(out)


def test_build_script_reproduces_the_shipped_tokenizer(tmp_path):
    build = _build_script()
    assert build.main(["--out", str(tmp_path)]) == 0
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (BUILTIN_TOKENIZER_DIR / name).read_bytes(), name
    assert sorted(p.name for p in BUILTIN_TOKENIZER_DIR.iterdir()) == [
        "tokenizer.json",
        "tokenizer_config.json",
    ]

"""ChatML conversations rendered to token ids one turn at a time, with the training loss mask.

A turn is `<|im_start|>{role}\\n{content}<|im_end|>\\n`, split into three separately tokenized
parts: the header `<|im_start|>{role}\\n`, the content, and the closing `<|im_end|>\\n`. The sampler
is given everything up to an assistant header and produces exactly `content <|im_end|>`, so those
are the tokens the loss is taken on; headers, the `\\n` after `<|im_end|>`, and every other role's
turn are context only.

For ordinary content the concatenated turns equal the tokenization of the whole rendered
conversation (what `tokenizer.apply_chat_template` gives). They can differ only when content
starts with a line break, possibly after other whitespace: in the whole string Qwen2's split regex
joins those line breaks with the `\\n` that ends the header. The turn-by-turn ids are the ones to
train on, since they are what the sampler saw and produced; both decode to the same text.

Content is always text. A literal "<|im_end|>" in a command's output or in the model's text is
tokenized as ordinary characters, never as the control token, so it cannot end a turn early.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from transformers import PreTrainedTokenizerBase

from swejax.tokenizer._load import im_end_id, im_start_id

# Roles swejax uses -> the role ChatML sees. Observations (what the environment printed in reply
# to a command) reach the model as user turns: ChatML has no role of its own for them.
_CHATML_ROLE = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "observation": "user",
}
ROLES = tuple(_CHATML_ROLE)


@dataclasses.dataclass(frozen=True)
class ChatTokens:
    """Token ids and, per id, whether training takes a loss on it.

    `loss_mask[i]` is True exactly when `ids[i]` is assistant content or the `<|im_end|>` closing
    an assistant turn. Both are plain lists of the same length (checked); add with `+`.
    """

    ids: list[int]
    loss_mask: list[bool]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.loss_mask):
            raise ValueError(
                f"ids and loss_mask differ in length: {len(self.ids)} != {len(self.loss_mask)}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __add__(self, other: ChatTokens) -> ChatTokens:
        return ChatTokens(self.ids + other.ids, self.loss_mask + other.loss_mask)

    @staticmethod
    def concat(parts: Iterable[ChatTokens]) -> ChatTokens:
        ids: list[int] = []
        loss_mask: list[bool] = []
        for part in parts:
            ids.extend(part.ids)
            loss_mask.extend(part.loss_mask)
        return ChatTokens(ids, loss_mask)


def _context(ids: list[int]) -> ChatTokens:
    return ChatTokens(ids, [False] * len(ids))


def _trained(ids: list[int]) -> ChatTokens:
    return ChatTokens(ids, [True] * len(ids))


def _encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Ids of `text` as plain text: added tokens such as "<|im_end|>" are not recognized.

    Runs the backend's normalizer, pre-tokenizer and BPE model directly. transformers'
    `split_special_tokens=True` gives the same ids but flips a flag on the shared backend for each
    call, which is unsafe when several threads encode with one tokenizer.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast (tokenizers-backed) tokenizer; "
            "swejax needs one with a tokenizer.json"
        )
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    pieces = [text]
    if backend.pre_tokenizer is not None:
        pieces = [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
    return [token.id for piece in pieces for token in backend.model.tokenize(piece)]


def _chatml_role(role: str) -> str:
    if role not in _CHATML_ROLE:
        raise ValueError(f"unknown role {role!r}; allowed roles are {', '.join(ROLES)}")
    return _CHATML_ROLE[role]


def _header(tokenizer: PreTrainedTokenizerBase, chatml_role: str) -> list[int]:
    return [im_start_id(tokenizer), *_encode_text(tokenizer, chatml_role + "\n")]


def generation_prompt(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of `<|im_start|>assistant\\n`: appended to a conversation before sampling a reply."""
    return _header(tokenizer, "assistant")


def render_turn(tokenizer: PreTrainedTokenizerBase, role: str, content: str) -> ChatTokens:
    """One message as `<|im_start|>{role}\\n{content}<|im_end|>\\n`, loss on assistant output only.

    `role` is one of ROLES; "observation" is rendered as a ChatML user turn.
    """
    chatml_role = _chatml_role(role)
    content_ids = [*_encode_text(tokenizer, content), im_end_id(tokenizer)]
    generated = _trained(content_ids) if role == "assistant" else _context(content_ids)
    return (
        _context(_header(tokenizer, chatml_role))
        + generated
        + _context(_encode_text(tokenizer, "\n"))
    )


def render_sampled_turn(
    tokenizer: PreTrainedTokenizerBase, sampled_ids: Sequence[int]
) -> ChatTokens:
    """An assistant turn from the ids the sampler produced, kept as they are.

    Re-tokenizing the decoded text can give different ids than the ones sampled (BPE has many
    spellings of one string), which would train on tokens the model never chose; this keeps them.
    `sampled_ids` is content then `<|im_end|>`. When it lacks the final `<|im_end|>` (the sampler
    hit its length limit) the turn is returned unclosed, without the trailing `\\n`.
    """
    turn = _context(generation_prompt(tokenizer)) + _trained(list(sampled_ids))
    if sampled_ids and sampled_ids[-1] == im_end_id(tokenizer):
        turn = turn + _context(_encode_text(tokenizer, "\n"))
    return turn


def render_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, str]],
    add_generation_prompt: bool = False,
) -> ChatTokens:
    """Messages ({"role": ..., "content": ...}) rendered turn by turn and concatenated.

    With `add_generation_prompt`, ends with `<|im_start|>assistant\\n` (not in the loss).
    """
    turns = []
    for index, message in enumerate(messages):
        if "role" not in message or "content" not in message:
            raise ValueError(
                f"message {index} needs 'role' and 'content', got keys {list(message)}"
            )
        turns.append(render_turn(tokenizer, message["role"], message["content"]))
    if add_generation_prompt:
        turns.append(_context(generation_prompt(tokenizer)))
    return ChatTokens.concat(turns)

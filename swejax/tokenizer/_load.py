"""Loading a tokenizer, and the ids of the ChatML control tokens."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

# Built by tools/build_tokenizer.py; small enough to ship, laid out like Qwen2's.
BUILTIN_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "tokenizer"

# Any one makes a directory loadable by AutoTokenizer: fast, byte-level BPE, sentencepiece.
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"


def load_tokenizer(path: str | os.PathLike[str] | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer in checkpoint directory `path`, or the built-in one when `path` is None or "".

    Never downloads: `path` must be a local directory. Raises FileNotFoundError when it is missing
    or holds no tokenizer files, and ValueError when the tokenizer lacks the ChatML tokens.
    """
    directory = Path(path) if path else BUILTIN_TOKENIZER_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"tokenizer directory does not exist: {directory}")
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"no tokenizer files in {directory} (expected one of {', '.join(_TOKENIZER_FILES)})"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    for token in (IM_START, IM_END):
        special_token_id(tokenizer, token)  # fail here, not halfway through the first episode
    return tokenizer


def special_token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """The single id of `token`; ValueError if the tokenizer does not have it as one token."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    # Unknown tokens come back as None or as the unk id, so check the id maps back to the token.
    if token_id is None or tokenizer.convert_ids_to_tokens(token_id) != token:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} has no single token {token!r}; "
            "swejax needs a ChatML (Qwen2-style) tokenizer"
        )
    return token_id


def im_start_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """`<|im_start|>`, which opens every turn."""
    return special_token_id(tokenizer, IM_START)


def im_end_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """`<|im_end|>`, which closes every turn: the sampler's stop token."""
    return special_token_id(tokenizer, IM_END)


def endoftext_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """`<|endoftext|>`, Qwen's padding token."""
    return special_token_id(tokenizer, ENDOFTEXT)

"""Tokenizers and the ChatML chat format, as token ids with a training loss mask.

    tokenizer = load_tokenizer()          # built-in; load_tokenizer(checkpoint_dir) for Qwen2.5
    prompt = render_conversation(tokenizer, messages, add_generation_prompt=True)
    stop = im_end_id(tokenizer)           # the sampler stops a turn on this id

The built-in tokenizer (swejax/assets/tokenizer, made by tools/build_tokenizer.py) is a 2,803-token
byte-level BPE with Qwen2's pre-tokenizer and special tokens, for tests and tiny models.
"""

from swejax.tokenizer._chat import (
    ROLES,
    ChatTokens,
    generation_prompt,
    render_conversation,
    render_sampled_turn,
    render_turn,
)
from swejax.tokenizer._load import (
    BUILTIN_TOKENIZER_DIR,
    ENDOFTEXT,
    IM_END,
    IM_START,
    endoftext_id,
    im_end_id,
    im_start_id,
    load_tokenizer,
    special_token_id,
)

__all__ = [
    "BUILTIN_TOKENIZER_DIR",
    "ENDOFTEXT",
    "IM_END",
    "IM_START",
    "ROLES",
    "ChatTokens",
    "endoftext_id",
    "generation_prompt",
    "im_end_id",
    "im_start_id",
    "load_tokenizer",
    "render_conversation",
    "render_sampled_turn",
    "render_turn",
    "special_token_id",
]

"""Build the small tokenizer that swejax ships in `swejax/assets/tokenizer/`.

    python tools/build_tokenizer.py            # rebuilds the shipped tokenizer in place
    python tools/build_tokenizer.py --out /tmp/tok --vocab-size 600 --corpus my.txt

A good run takes about a second, prints the vocabulary size (2,803 for the shipped one: 2,800 BPE
tokens, then the three Qwen special tokens) and leaves tokenizer.json and tokenizer_config.json in
the output folder; `git diff` on them is empty when nothing changed.

The tokenizer is laid out like Qwen2's, so code written against it works unchanged on a real
Qwen2.5 checkpoint: byte-level BPE behind Qwen2's split regex, byte-level decoding, and
`<|endoftext|>`, `<|im_start|>`, `<|im_end|>` as special tokens right after the BPE vocabulary.
One deliberate difference: Qwen2 NFC-normalizes its input, this one does not, so
decode(encode(text)) == text for every string, decomposed unicode included.

Training reads only `tools/tokenizer_corpus.txt`, a fixed hand-written corpus, never the project's
own sources: those change every day and the shipped vocabulary must not. The BPE trainer breaks
ties between equally frequent pairs by token id, so the same corpus gives the same bytes. Both
files are written here rather than by `save_pretrained`, whose output differs between transformers
versions; they load with `transformers.AutoTokenizer.from_pretrained` (checked on 5.x).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO_ROOT / "tools" / "tokenizer_corpus.txt"
DEFAULT_OUT = REPO_ROOT / "swejax" / "assets" / "tokenizer"
# The shipped corpus runs out of pairs seen twice at about 2,950 BPE tokens; stopping below that
# keeps every merge backed by more than one occurrence.
DEFAULT_BPE_VOCAB_SIZE = 2800

# Qwen2's pre-tokenizer split (tokenizer.json of every Qwen2 / Qwen2.5 checkpoint). Digits are
# split one by one; letters keep one leading non-letter (usually a space); newlines group together.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Order matters: ids are assigned in this order right after the BPE vocabulary, as in Qwen2.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
EOS_TOKEN = "<|im_end|>"  # what ends an assistant turn, so what sampling stops on
PAD_TOKEN = "<|endoftext|>"

# ChatML, with no default system prompt (Qwen's own template adds one; swejax always passes its
# own). Every message is `<|im_start|>{role}\n{content}<|im_end|>\n`.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


def untrained_tokenizer() -> Tokenizer:
    """An empty byte-level BPE tokenizer with Qwen2's pre-tokenizer, decoder and post-processor."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()  # maps bytes back; it has no options that matter
    # No trimming keeps character offsets exact, which assistant-mask tools rely on.
    tokenizer.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    return tokenizer


def train_tokenizer(corpus: str, bpe_vocab_size: int) -> Tokenizer:
    """Byte-level BPE trained on `corpus`, then the special tokens appended after its vocabulary."""
    tokenizer = untrained_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab_size,
        min_frequency=2,
        show_progress=False,
        # All 256 bytes, so any input encodes (there is no unknown token) and ids 0..255 are fixed.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    # One sequence, not one per line, so the trainer sees newlines followed by indentation.
    tokenizer.train_from_iterator([corpus], trainer=trainer)
    tokenizer.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS]
    )
    return tokenizer


def tokenizer_config(model_max_length: int = 32768) -> dict[str, object]:
    """The tokenizer_config.json that makes transformers load tokenizer.json as a fast tokenizer."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": None,
        "chat_template": CHATML_TEMPLATE,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
    }


def build(corpus_path: Path, out_dir: Path, bpe_vocab_size: int) -> Tokenizer:
    """Train on `corpus_path` and write tokenizer.json and tokenizer_config.json to `out_dir`."""
    tokenizer = train_tokenizer(corpus_path.read_text(encoding="utf-8"), bpe_vocab_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=True)
    config_text = json.dumps(tokenizer_config(), indent=2, ensure_ascii=False) + "\n"
    (out_dir / "tokenizer_config.json").write_text(config_text, encoding="utf-8")
    return tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=DEFAULT_BPE_VOCAB_SIZE,
        help="BPE vocabulary size, before the special tokens (an upper bound: a small corpus "
        "can run out of pairs seen twice)",
    )
    args = parser.parse_args(argv)
    tokenizer = build(args.corpus, args.out, args.vocab_size)
    print(f"wrote {args.out}: {tokenizer.get_vocab_size(with_added_tokens=True)} tokens")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

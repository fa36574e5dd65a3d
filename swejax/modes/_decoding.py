"""How `eval` decodes (`--decoding`): the config's way (eval.temperature, or --temperature,
--top-k, --top-p), or the checkpoint's own generation_config.json, every field of which is
named in the output and the report with what swejax did with it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from swejax import builder
from swejax.config import Config
from swejax.errors import UserError
from swejax.sampling import (
    GENERATION_CONFIG,
    CheckpointDecoding,
    SamplingParams,
    checkpoint_decoding,
    read_generation_config,
)

DECODINGS = ("config", "checkpoint")  # --decoding's choices
_OPTIONS = ("temperature", "top_k", "top_p")


@dataclasses.dataclass(frozen=True)
class EvalDecoding:
    """How an evaluation samples, and where that came from."""

    sampling: SamplingParams
    file: str = ""  # the generation_config.json followed; "": the config's decoding
    checkpoint: CheckpointDecoding | None = None  # what became of each of its fields

    def summary(self) -> str:
        """The sampling in a few words: "temperature 0.7, top-k 20, ..."."""
        p = self.sampling
        parts = [f"temperature {p.temperature:g}" + (" (greedy)" if p.temperature == 0 else "")]
        if p.top_k:
            parts.append(f"top-k {p.top_k}")
        if p.top_p < 1.0:
            parts.append(f"top-p {p.top_p:g}")
        if p.penalizes_repetition:
            parts.append(f"repetition penalty {p.repetition_penalty:g}")
        return ", ".join(parts)

    def lines(self) -> list[str]:
        """What the eval mode prints about its decoding: from a checkpoint's file, every field
        it sets (and each default that mattered) with what swejax did with it."""
        if self.checkpoint is None:
            return [f"decoding  config: {self.summary()}"]
        lines = [f"decoding  {self.file}: {self.summary()}"]
        lines += [f"  {f.name} = {json.dumps(f.value)} -> {f.use}" for f in self.checkpoint.fields]
        lines += [
            f"  {f.name} (not set) = {json.dumps(f.value)} -> {f.use}"
            for f in self.checkpoint.defaults
        ]
        return lines

    def to_dict(self) -> dict:
        """The report's "decoding": the sampling used and, from a file, field -> value and how
        swejax applied it."""
        if self.checkpoint is None:
            return {"mode": "config", "sampling": dataclasses.asdict(self.sampling)}
        return {"mode": "checkpoint", "file": self.file, **self.checkpoint.to_dict()}


def eval_decoding(config: Config, options: argparse.Namespace) -> EvalDecoding:
    """The evaluation's decoding from --decoding and the sampling options; UserError (one line)
    for options that contradict it, or a checkpoint file swejax cannot follow."""
    if options.decoding == "config":
        temperature = (
            config.eval.temperature if options.temperature is None else options.temperature
        )
        top_k = 0 if options.top_k is None else options.top_k
        top_p = 1.0 if options.top_p is None else options.top_p
        sampling = builder.from_user_input(
            "bad decoding options", SamplingParams, temperature, top_k, top_p
        )
        return EvalDecoding(sampling)
    given = [
        f"--{name.replace('_', '-')}" for name in _OPTIONS if getattr(options, name) is not None
    ]
    if given:
        raise UserError(
            f"--decoding=checkpoint takes the sampling from the checkpoint's {GENERATION_CONFIG}; "
            f"drop {', '.join(given)} (or use --decoding=config)"
        )
    checkpoint = config.model.checkpoint
    if not checkpoint:
        raise UserError(
            f"--decoding=checkpoint reads {GENERATION_CONFIG} from config.model.checkpoint, but "
            f"none is set (the model is preset {config.model.preset} with random weights)"
        )
    raw = builder.from_user_input("--decoding=checkpoint", read_generation_config, checkpoint)
    decoding = builder.from_user_input(
        f"--decoding=checkpoint: {checkpoint}", checkpoint_decoding, raw, _stop_token(config)
    )
    return EvalDecoding(decoding.sampling, os.path.join(checkpoint, GENERATION_CONFIG), decoding)


def _stop_token(config: Config) -> int:
    """The id the engine ends a turn at (`<|im_end|>` of the run's tokenizer), to say what
    becomes of the file's eos ids; read before the model is built, so a bad file fails fast."""
    from swejax.tokenizer import im_end_id, load_tokenizer

    tokenizer = builder.from_user_input(
        "cannot load the tokenizer", load_tokenizer, builder.tokenizer_dir(config)
    )
    return im_end_id(tokenizer)

"""A checkpoint's own decoding: its `generation_config.json` read as swejax's `SamplingParams`,
with every field the file sets accounted for (applied, of no effect here, or refused).

The fields mean what transformers' `generate` makes of them, since that is what the file was
written for: `do_sample` false (or absent, transformers' default) is greedy, and greedy ignores
temperature, top-k and top-p but not the repetition penalty; sampling without a `top_k` takes
transformers' default of 50. A field that would change which tokens are drawn in a way swejax
does not reproduce (min-p, typical-p, beams, n-gram bans, ...) is refused, and so is a field
swejax does not know: it could not say what the file's decoding is.

Pure: `checkpoint_decoding` takes the file's parsed JSON; `read_generation_config` reads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from swejax.sampling._strategies import SamplingParams

GENERATION_CONFIG = "generation_config.json"

# transformers' values for what the file does not set (`GenerationConfig`'s defaults), where
# they change what swejax does.
_DEFAULT_TOP_K = 50

# Fields that change nothing about which tokens are drawn, and why.
_NO_EFFECT = {
    "transformers_version": "metadata",
    "_from_model_config": "metadata",
    "max_length": "not applied: a reply's budget is rollout.max_reply_tokens, a slot's context "
    "engine.capacity",
    "max_new_tokens": "not applied: a reply's budget is rollout.max_reply_tokens",
    "max_time": "not applied: no time limit on a reply",
    "num_return_sequences": "not applied: the runs per task are --runs",
    "early_stopping": "no effect: beam search only",
    "length_penalty": "no effect: beam search only",
    "renormalize_logits": "no effect: sampling is from the normalized distribution anyway",
    "decoder_start_token_id": "no effect: encoder-decoder models only",
    **dict.fromkeys(
        (
            "use_cache",
            "cache_implementation",
            "cache_config",
            "max_cache_len",
            "return_dict_in_generate",
            "output_scores",
            "output_logits",
            "output_attentions",
            "output_hidden_states",
            "low_memory",
            "compile_config",
            "disable_compile",
            "prefill_chunk_size",
        ),
        "no effect: how transformers runs or what it returns, not what it draws",
    ),
    **dict.fromkeys(
        (
            "is_assistant",
            "num_assistant_tokens",
            "num_assistant_tokens_schedule",
            "assistant_confidence_threshold",
            "prompt_lookup_num_tokens",
            "max_matching_ngram_size",
            "assistant_early_exit",
            "assistant_lookbehind",
            "target_lookbehind",
        ),
        "no effect: assisted (speculative) decoding, which draws from the same distribution",
    ),
}

# Fields swejax cannot honour: (their values that change nothing, what they would do).
_UNSUPPORTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "num_beams": ((None, 1), "beam search"),
    "num_beam_groups": ((None, 1), "group beam search"),
    "diversity_penalty": ((None, 0), "group beam search"),
    "penalty_alpha": ((None,), "contrastive search"),
    "dola_layers": ((None,), "DoLa decoding"),
    "min_p": ((None,), "min-p filtering"),
    "top_h": ((None,), "top-h filtering"),
    "typical_p": ((None, 1), "typical-p filtering"),
    "epsilon_cutoff": ((None, 0), "epsilon sampling"),
    "eta_cutoff": ((None, 0), "eta sampling"),
    "no_repeat_ngram_size": ((None, 0), "n-gram bans"),
    "encoder_no_repeat_ngram_size": ((None, 0), "encoder n-gram bans"),
    "encoder_repetition_penalty": ((None, 1), "the encoder repetition penalty"),
    "bad_words_ids": ((None, []), "banned words"),
    "force_words_ids": ((None, []), "forced words"),
    "constraints": ((None, []), "constrained beam search"),
    "sequence_bias": ((None, {}, []), "sequence biases"),
    "suppress_tokens": ((None, []), "suppressed tokens"),
    "begin_suppress_tokens": ((None, []), "tokens suppressed at the start"),
    "forced_bos_token_id": ((None,), "a forced first token"),
    "forced_eos_token_id": ((None,), "a forced last token"),
    "guidance_scale": ((None, 1), "classifier-free guidance"),
    "remove_invalid_values": ((None, False), "replacing nan and inf logits"),
    "exponential_decay_length_penalty": ((None,), "a length penalty on end tokens"),
    "min_length": ((None, 0), "a minimum length (end tokens banned before it)"),
    "min_new_tokens": ((None, 0), "a minimum length (end tokens banned before it)"),
    "stop_strings": ((None, []), "stop strings"),
    "watermarking_config": ((None,), "watermarking"),
    "token_healing": ((None, False), "token healing"),
}

_SAMPLING_FIELDS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty")
_ID_FIELDS = ("eos_token_id", "pad_token_id", "bos_token_id")


@dataclasses.dataclass(frozen=True)
class FieldUse:
    """One field: its value and what swejax does with it."""

    name: str
    value: Any  # as the file gives it (JSON); for a default, transformers' value
    use: str


@dataclasses.dataclass(frozen=True)
class CheckpointDecoding:
    """The decoding a generation_config.json asks for, as swejax applies it."""

    sampling: SamplingParams
    fields: tuple[FieldUse, ...]  # every field the file sets, in the file's order
    defaults: tuple[FieldUse, ...]  # transformers' defaults for fields it leaves out that matter

    def to_dict(self) -> dict:
        """The --report's account: field -> value and how swejax applied it."""
        return {
            "sampling": dataclasses.asdict(self.sampling),
            "fields": {f.name: {"value": f.value, "swejax": f.use} for f in self.fields},
            "defaults": {f.name: {"value": f.value, "swejax": f.use} for f in self.defaults},
        }


def read_generation_config(checkpoint: str) -> dict:
    """The parsed generation_config.json of a Hugging Face checkpoint directory; ValueError
    (one line) when there is none or it is not a JSON object."""
    path = os.path.join(checkpoint, GENERATION_CONFIG)
    if not os.path.isfile(path):
        raise ValueError(f"{checkpoint} has no {GENERATION_CONFIG}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds {type(raw).__name__}, not a JSON object")
    return raw


def checkpoint_decoding(raw: Mapping[str, Any], stop_token: int) -> CheckpointDecoding:
    """The decoding `raw` (a parsed generation_config.json) sets, for an engine that ends a
    turn at `stop_token` (`<|im_end|>`). ValueError naming every field swejax cannot honour."""
    refused = [
        f"{name}={_shown(value)} ({_refusal(name)})"
        for name, value in raw.items()
        if not _honoured(name, value)
    ]
    if refused:
        raise ValueError(
            f"{GENERATION_CONFIG} asks for decoding swejax does not reproduce: "
            + "; ".join(refused)
        )
    sampling, sampling_uses, defaults = _sampling(raw)
    fields = []
    for name, value in raw.items():
        if name in sampling_uses:
            use = sampling_uses[name]
        elif name in _ID_FIELDS:
            use = _id_use(name, value, stop_token)
        elif name in _NO_EFFECT:
            use = _NO_EFFECT[name]
        else:
            use = f"no effect: the value that turns off {_UNSUPPORTED[name][1]}"
        fields.append(FieldUse(name, value, use))
    return CheckpointDecoding(sampling, tuple(fields), defaults)


def _honoured(name: str, value: Any) -> bool:
    """Whether swejax reproduces what the field asks for (an unsupported one only at a value
    that turns it off)."""
    if name in _SAMPLING_FIELDS or name in _ID_FIELDS or name in _NO_EFFECT:
        return True
    return name in _UNSUPPORTED and value in _UNSUPPORTED[name][0]


def _refusal(name: str) -> str:
    if name in _UNSUPPORTED:
        return _UNSUPPORTED[name][1]
    return "a field swejax does not know, so it cannot tell what it changes"


def _sampling(raw: Mapping[str, Any]) -> tuple[SamplingParams, dict, tuple[FieldUse, ...]]:
    """SamplingParams from the five sampling fields (transformers' meaning), what became of
    each field present, and the defaults that matter for those absent."""
    do_sample = _typed(raw, "do_sample", bool, False)
    penalty = float(_typed(raw, "repetition_penalty", (int, float), 1.0))
    penalty_use = (
        "applied: to every token in a slot's context (prompt, replies, observations) before "
        "temperature"
        if penalty != 1.0
        else "no effect: 1 is no penalty"
    )
    uses = {"repetition_penalty": penalty_use}
    if not do_sample:
        uses["do_sample"] = "applied: greedy decoding"
        for name in ("temperature", "top_k", "top_p"):
            _typed(raw, name, (int, float) if name != "top_k" else int, None)
            uses[name] = "no effect: greedy (do_sample false) ignores it, as transformers does"
        defaults = ()
        if "do_sample" not in raw:
            defaults = (FieldUse("do_sample", False, "transformers' default: greedy decoding"),)
        params = _params(temperature=0.0, repetition_penalty=penalty)
        return params, uses, defaults
    temperature = float(_typed(raw, "temperature", (int, float), 1.0))
    top_k = _typed(raw, "top_k", int, None)
    top_p = float(_typed(raw, "top_p", (int, float), 1.0))
    defaults = ()
    if top_k is None:
        top_k = _DEFAULT_TOP_K
        use = f"transformers' default when sampling: applied, top-k {_DEFAULT_TOP_K}"
        defaults = (FieldUse("top_k", _DEFAULT_TOP_K, use),)
    if temperature <= 0:
        raise ValueError(
            f"{GENERATION_CONFIG}: do_sample true needs a temperature > 0, got {temperature:g}"
        )
    uses["do_sample"] = "applied: sampling"
    uses["temperature"] = "applied" if temperature != 1.0 else "applied (1: the model's own)"
    uses["top_k"] = "applied" if top_k else "no effect: 0 is off"
    uses["top_p"] = "applied" if top_p < 1.0 else "no effect: 1 is off"
    params = _params(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=penalty)
    return params, uses, defaults


def _params(**fields) -> SamplingParams:
    try:
        return SamplingParams(**fields)
    except ValueError as error:
        raise ValueError(f"{GENERATION_CONFIG}: {error}") from error


def _typed(raw: Mapping[str, Any], name: str, kinds, default):
    """raw[name] if it is of `kinds` (null: `default`, as transformers treats it); a bool is no
    number here."""
    value = raw.get(name)
    if value is None:
        return default
    if isinstance(value, bool) != (kinds is bool) or not isinstance(value, kinds):
        raise ValueError(f"{GENERATION_CONFIG}: {name} is {_shown(value)}, not a {_kind(kinds)}")
    return value


def _kind(kinds) -> str:
    return {bool: "boolean", int: "whole number"}.get(kinds, "number")


def _id_use(name: str, value: Any, stop_token: int) -> str:
    if name == "eos_token_id":
        ids = value if isinstance(value, list) else [value]
        if stop_token in ids:
            others = [i for i in ids if i != stop_token]
            use = f"{stop_token} (<|im_end|>, the chat template's end of turn) ends a turn"
            if others:
                use += (
                    f"; {', '.join(map(str, others))} does not: the engine stops at "
                    "<|im_end|> only, so such a token is kept in the reply and sampling goes on"
                )
            return use
        return (
            f"not applied: the engine ends a turn at <|im_end|> ({stop_token}), the chat "
            "template's end of turn, only"
        )
    if name == "pad_token_id":
        return "no effect: swejax never pads a sequence (each slot holds its own)"
    return "no effect: prompts are the chat template's tokens, which start with no BOS token"


def _shown(value: Any) -> str:
    return json.dumps(value)

"""Evaluation with a checkpoint's own decoding: the repetition penalty against transformers on
the same weights (greedy, through the engine's multi-turn slots, and seeded sampling with every
filter), generation_config.json read as swejax's sampling, and `eval --decoding=checkpoint`."""

import json

import jax
import numpy as np
import pytest
import torch
from hf_utils import hf_logits, random_hf_model, tiny_hf_config
from transformers import GenerationConfig, LogitsProcessorList

from swejax.models import load_hf_checkpoint
from swejax.sampling import (
    Engine,
    EngineConfig,
    SamplingParams,
    checkpoint_decoding,
    generate,
    require_unbiased,
    sampling_logits,
)

ATOL = 1e-5  # float32 log-probabilities, swejax against transformers
PENALTY = 1.3  # large enough to change a tiny random model's greedy output
NEW_TOKENS = 24
# Different lengths; the longest sets generate's engine (capacity 64, chunk 32), which the
# engine test builds too, so the programs compile once for both.
PROMPTS = [[5, 7, 9, 11, 13], [1, 2, 3], list(range(40, 70))]
ENGINE = EngineConfig(num_slots=3, capacity=64, chunk=32, steps_per_call=NEW_TOKENS)
# Qwen2.5-72B-Instruct's generation_config.json.
QWEN_INSTRUCT = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.05,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "transformers_version": "4.37.0",
}
IM_END = 151645


@pytest.fixture(scope="module")
def hf_and_ours(tmp_path_factory):
    hf = random_hf_model(tiny_hf_config(), seed=11)
    directory = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(directory)
    return hf, load_hf_checkpoint(str(directory))


def _hf_greedy(hf, context, penalty=PENALTY, new_tokens=NEW_TOKENS):
    """transformers' greedy continuation of `context` (one sequence: no padding) and the
    log_softmax of its processed scores at each token."""
    ids = torch.tensor([context])
    with torch.no_grad():
        out = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            repetition_penalty=penalty,
            eos_token_id=None,
            pad_token_id=159,
            output_scores=True,
            return_dict_in_generate=True,
        )
    tokens = out.sequences[0, len(context) :].tolist()
    scores = zip(out.scores, tokens, strict=True)
    return tokens, np.array([torch.log_softmax(s[0], -1)[t].item() for s, t in scores])


def _hf_processors(hf, **generation):
    """The LogitsProcessorList transformers' `generate` builds for these generation settings
    (its processors, in its order)."""
    return hf._get_logits_processor(
        generation_config=GenerationConfig(**generation),
        input_ids_seq_length=1,
        encoder_input_ids=None,
        prefix_allowed_tokens_fn=None,
        logits_processor=LogitsProcessorList(),
        device="cpu",
        model_kwargs={},
    )


# --- the sampler -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "generation",
    [
        dict(do_sample=False, repetition_penalty=PENALTY),
        dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.05),
    ],
)
def test_processed_logits_equal_transformers_processors(generation, hf_and_ours):
    """Over the whole vocabulary, negative logits and filtered tokens included."""
    hf, _ = hf_and_ours
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, (3, 160)).astype(np.float32)
    sequences = [rng.integers(0, 160, n) for n in (1, 30, 200)]  # repeats, and most of V
    seen = np.zeros((3, 160), bool)
    expected = []
    processors = _hf_processors(hf, **generation)
    for row, sequence in enumerate(sequences):
        seen[row, sequence] = True
        ids = torch.from_numpy(sequence)[None]
        expected.append(processors(ids, torch.from_numpy(logits[row : row + 1].copy()))[0])
    temperature = generation.get("temperature", 1.0) if generation["do_sample"] else 0.0
    params = SamplingParams(
        temperature,
        generation.get("top_k", 0),
        generation.get("top_p", 1.0),
        generation["repetition_penalty"],
    )
    ours = np.asarray(jax.jit(sampling_logits, static_argnums=1)(logits, params, seen))
    np.testing.assert_allclose(ours, torch.stack(expected).numpy(), rtol=0, atol=1e-6)


def test_repetition_penalty_is_refused_for_training_and_must_be_positive():
    with pytest.raises(ValueError, match="repetition_penalty=1.05 change it.*importance ratio"):
        require_unbiased(SamplingParams(temperature=1.0, repetition_penalty=1.05))
    require_unbiased(SamplingParams(temperature=1.0, repetition_penalty=1.0))
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="repetition_penalty must be > 0"):
            SamplingParams(repetition_penalty=bad)
    with pytest.raises(ValueError, match="needs `seen`"):
        sampling_logits(np.zeros((1, 4), np.float32), SamplingParams(repetition_penalty=1.1))


# --- against transformers' generate, same weights ---------------------------------------------


@pytest.mark.slow
def test_greedy_with_repetition_penalty_equals_transformers_generate(hf_and_ours):
    hf, ours = hf_and_ours
    outs = generate(ours, PROMPTS, max_new_tokens=NEW_TOKENS, repetition_penalty=PENALTY)
    for prompt, out in zip(PROMPTS, outs, strict=True):
        tokens, logprobs = _hf_greedy(hf, prompt)
        assert out.tokens == tokens
        np.testing.assert_allclose(out.logprobs, logprobs, rtol=0, atol=ATOL)
        assert tokens != _hf_greedy(hf, prompt, penalty=1.0)[0], "the penalty must matter here"


@pytest.mark.slow
def test_engine_penalizes_observations_and_a_reused_slot_starts_clean(hf_and_ours):
    """Multi-turn: an observation appended to a live slot counts as seen; a slot freed after a
    long episode starts its next sequence with nothing seen; neighbours do not mix."""
    hf, ours = hf_and_ours
    engine = Engine(ours, ENGINE, SamplingParams(temperature=0.0, repetition_penalty=PENALTY))

    def turn(slots):
        for slot in slots:
            engine.start_turn(slot, NEW_TOKENS)
        result = engine.decode()
        assert all(result.stopped[slot] for slot in slots)
        return [result.tokens[slot].tolist() for slot in slots]

    engine.prefill_many(list(enumerate(PROMPTS)))
    first = turn([0, 1, 2])
    assert first == [_hf_greedy(hf, prompt)[0] for prompt in PROMPTS]
    # The observation: the tokens the model likes most next among those it has not seen, so
    # that counting them or not changes the next turn.
    context = PROMPTS[0] + first[0]
    liked = np.argsort(-hf_logits(hf, np.array([context]))[0, -1]).tolist()
    observation = [t for t in liked if t not in context][:6]
    engine.extend(0, observation)
    engine.free(2)
    engine.prefill(2, PROMPTS[2])  # a slot that held a sequence and its 24 tokens
    second, again = turn([0, 2])
    assert second == _hf_greedy(hf, context + observation)[0]
    assert again == first[2]
    engine.free(0)
    engine.prefill(0, PROMPTS[1])  # after the longest episode
    assert turn([0]) == [first[1]]


@pytest.mark.slow
def test_seeded_sampling_logprobs_equal_transformers_processed_scores(hf_and_ours):
    """torch draws otherwise, so along swejax's draws: each token's log-probability is the
    log_softmax of the scores transformers' processors make of the same context."""
    hf, ours = hf_and_ours
    settings = dict(temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=PENALTY)
    outs = generate(ours, PROMPTS, max_new_tokens=NEW_TOKENS, seed=3, **settings)
    processors = _hf_processors(hf, do_sample=True, **settings)
    for prompt, out in zip(PROMPTS, outs, strict=True):
        sequence = prompt + out.tokens
        logits = torch.from_numpy(hf_logits(hf, np.array([sequence]))[0])
        expected = []
        for i, token in enumerate(out.tokens):
            context = torch.tensor([sequence[: len(prompt) + i]])
            scores = processors(context, logits[len(prompt) + i - 1][None].clone())
            expected.append(torch.log_softmax(scores[0], -1)[token].item())
        np.testing.assert_allclose(out.logprobs, expected, rtol=0, atol=ATOL)
    again = generate(ours, PROMPTS, max_new_tokens=NEW_TOKENS, seed=3, **settings)
    assert [o.tokens for o in again] == [o.tokens for o in outs]
    other = generate(ours, PROMPTS, max_new_tokens=NEW_TOKENS, seed=4, **settings)
    assert [o.tokens for o in other] != [o.tokens for o in outs]


# --- generation_config.json ---------------------------------------------------------------


def _uses(decoding) -> dict[str, str]:
    return {f.name: f.use for f in decoding.fields}


def test_qwen_instruct_generation_config_is_its_sampling_with_every_field_named():
    decoding = checkpoint_decoding(QWEN_INSTRUCT, IM_END)
    assert decoding.sampling == SamplingParams(0.7, 20, 0.8, 1.05)
    assert [f.name for f in decoding.fields] == list(QWEN_INSTRUCT)
    assert [f.value for f in decoding.fields] == list(QWEN_INSTRUCT.values())
    uses = _uses(decoding)
    for name in ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty"):
        assert uses[name].startswith("applied"), name
    assert (
        "151645 (<|im_end|>" in uses["eos_token_id"] and "151643 does not" in uses["eos_token_id"]
    )
    assert uses["pad_token_id"].startswith("no effect") and uses["bos_token_id"].startswith("no")
    assert decoding.defaults == ()
    report = decoding.to_dict()
    assert report["fields"]["top_k"] == {"value": 20, "swejax": "applied"}
    assert report["sampling"]["repetition_penalty"] == 1.05


def test_generation_config_means_what_transformers_makes_of_it():
    # Qwen2.5's base model: do_sample false is greedy; the penalty would still apply.
    base = {"bos_token_id": 151643, "do_sample": False, "eos_token_id": 151643}
    decoding = checkpoint_decoding({**base, "max_new_tokens": 2048, "temperature": 0.7}, IM_END)
    assert decoding.sampling == SamplingParams(temperature=0.0)
    uses = _uses(decoding)
    assert "greedy" in uses["do_sample"] and uses["temperature"].startswith("no effect: greedy")
    assert "max_reply_tokens" in uses["max_new_tokens"]
    assert "ends a turn at <|im_end|> (151645)" in uses["eos_token_id"]
    penalized = checkpoint_decoding({"repetition_penalty": 1.2}, IM_END)
    assert penalized.sampling == SamplingParams(temperature=0.0, repetition_penalty=1.2)
    assert [(f.name, f.value) for f in penalized.defaults] == [("do_sample", False)]
    # Sampling without a top_k: transformers' default of 50.
    sampled = checkpoint_decoding({"do_sample": True, "temperature": 0.6}, IM_END)
    assert sampled.sampling == SamplingParams(temperature=0.6, top_k=50)
    assert [(f.name, f.value) for f in sampled.defaults] == [("top_k", 50)]
    # Fields at the values that turn them off change nothing.
    neutral = {"num_beams": 1, "typical_p": 1.0, "min_p": None, "no_repeat_ngram_size": 0}
    decoding = checkpoint_decoding({**QWEN_INSTRUCT, **neutral}, IM_END)
    assert decoding.sampling == SamplingParams(0.7, 20, 0.8, 1.05)
    assert _uses(decoding)["num_beams"] == "no effect: the value that turns off beam search"


@pytest.mark.parametrize(
    "fields, must_say",
    [
        ({"min_p": 0.05}, "min_p=0.05 (min-p filtering)"),
        ({"typical_p": 0.9, "num_beams": 4}, "typical_p=0.9 (typical-p filtering); num_beams=4"),
        ({"no_repeat_ngram_size": 3}, "no_repeat_ngram_size=3 (n-gram bans)"),
        ({"epsilon_cutoff": 3e-4, "eta_cutoff": 1e-3}, "epsilon_cutoff=0.0003"),
        ({"min_new_tokens": 5}, "min_new_tokens=5"),
        ({"frobnicate": 1}, "frobnicate=1 (a field swejax does not know"),
        ({"temperature": 0}, "do_sample true needs a temperature > 0"),
        ({"top_p": 1.5}, "top_p must be in (0, 1]"),
        ({"top_k": 2.5}, "top_k is 2.5, not a whole number"),
        ({"do_sample": "yes"}, 'do_sample is "yes", not a boolean'),
    ],
)
def test_generation_config_swejax_cannot_honour_is_refused(fields, must_say):
    with pytest.raises(ValueError, match="generation_config.json") as error:
        checkpoint_decoding({**QWEN_INSTRUCT, **fields}, IM_END)
    assert must_say in str(error.value)


def test_convert_carries_generation_config_json(tmp_path):
    from swejax.models import copy_side_files

    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "generation_config.json").write_text(json.dumps(QWEN_INSTRUCT))
    assert copy_side_files(str(tmp_path / "in"), str(tmp_path / "out")) == [
        "generation_config.json"
    ]
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text()) == QWEN_INSTRUCT


# --- eval --decoding=checkpoint, from the command line -----------------------------------------

TASK = "swejax__b_roman_repeat"


def _eval(tmp_path, *args) -> int:
    from swejax.main import main

    return main(["eval", f"--only={TASK}", "--runs=1", f"--config.run_dir={tmp_path}", *args])


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swejax: error: "), captured.err
    return lines[0]


def test_eval_decoding_checkpoint_refuses_what_it_cannot_follow(tmp_path, capsys, monkeypatch):
    """Each before the model is built, in one line."""
    import swejax.env.sandbox

    monkeypatch.setattr(swejax.env.sandbox, "bwrap_available", lambda: True)
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    given = f"--config.model.checkpoint={checkpoint}"
    assert _eval(tmp_path, "--decoding=checkpoint") == 2
    assert "from config.model.checkpoint, but none is set" in _error_line(capsys)
    assert _eval(tmp_path, "--decoding=checkpoint", given) == 2
    assert f"{checkpoint} has no generation_config.json" in _error_line(capsys)
    (checkpoint / "generation_config.json").write_text(json.dumps({**QWEN_INSTRUCT, "min_p": 0.05}))
    assert _eval(tmp_path, "--decoding=checkpoint", given) == 2
    assert "min_p=0.05 (min-p filtering)" in _error_line(capsys)
    assert _eval(tmp_path, "--decoding=checkpoint", given, "--top-k=5") == 2
    assert "drop --top-k (or use --decoding=config)" in _error_line(capsys)


@pytest.mark.slow
def test_eval_decoding_checkpoint_samples_as_the_file_says_and_reports_every_field(
    tmp_path, capsys
):
    from swejax.env.sandbox import bwrap_available
    from swejax.models import build_model, preset, save_hf_checkpoint
    from swejax.tokenizer import endoftext_id, im_end_id, load_tokenizer

    if not bwrap_available():
        pytest.skip("bubblewrap is not installed")
    tokenizer = load_tokenizer()
    checkpoint = str(tmp_path / "checkpoint")
    save_hf_checkpoint(build_model(preset("tiny"), seed=0), checkpoint)
    # Qwen2.5-72B-Instruct's file, with the built-in tokenizer's ids.
    ids = {"bos_token_id": endoftext_id(tokenizer), "pad_token_id": endoftext_id(tokenizer)}
    ids["eos_token_id"] = [im_end_id(tokenizer), endoftext_id(tokenizer)]
    written = {**QWEN_INSTRUCT, **ids}
    with open(f"{checkpoint}/generation_config.json", "w") as f:
        json.dump(written, f)
    report = tmp_path / "report.json"
    small = ["--config.engine.num_slots=1", "--config.engine.page_size=1024"]
    small += ["--config.rollout.max_reply_tokens=16", "--config.scaffold.max_turns=1"]
    small += ["--config.dapo.l_thr=0", "--config.tasks.runtime=bwrap"]
    argv = ["--decoding=checkpoint", f"--config.model.checkpoint={checkpoint}", *small]
    assert _eval(tmp_path, *argv, f"--report={report}") == 0
    out = capsys.readouterr().out
    summary = "temperature 0.7, top-k 20, top-p 0.8, repetition penalty 1.05"
    assert f"decoding  {checkpoint}/generation_config.json: {summary}" in out
    assert f"tasks     1, 1 runs each, {summary}" in out
    for name, value in written.items():
        assert f"  {name} = {json.dumps(value)} -> " in out, name
    decoding = json.loads(report.read_text())["decoding"]
    assert decoding["mode"] == "checkpoint"
    assert decoding["sampling"] == dict(
        temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.05
    )
    assert {k: v["value"] for k, v in decoding["fields"].items()} == written
    assert "ends a turn" in decoding["fields"]["eos_token_id"]["swejax"]

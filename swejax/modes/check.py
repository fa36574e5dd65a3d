"""`check`: build the mesh, the model and the tokenizer as a run would, run one forward pass
and a short greedy generation, and print a summary."""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from swejax import builder
from swejax.config import Config
from swejax.modes import positive_int

SUMMARY = "build the mesh and the model, run one forward pass, print a summary"
_SEQ_LEN = 32
_SAMPLE_TOKENS = 16
_SAMPLE_CHAT = (
    {"role": "system", "content": "You are a software engineer. Reply with one command block."},
    {"role": "user", "content": "The test `test_parse_dates` fails with a KeyError."},
    {"role": "assistant", "content": "Let me look at the test first.\n```command\nls tests\n```"},
    {
        "role": "observation",
        "content": "test_dates.py\n(Open file: n/a)\n(Current directory: /repo)",
    },
)
logger = logging.getLogger("swejax")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="rows in the random batch (default: mesh data x fsdp, one row per shard)",
    )
    parser.add_argument(
        "--seq-len",
        type=positive_int,
        default=_SEQ_LEN,
        help=f"tokens per row (default: {_SEQ_LEN})",
    )


def run(config: Config, options: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from swejax import models, sharding
    from swejax import tokenizer as tok

    source = (
        f"checkpoint {config.model.checkpoint}"
        if config.model.checkpoint
        else f"preset {config.model.preset}"
    )
    logger.info("building the model (%s)", source)
    built = builder.build(config)
    mesh, model, cfg = built.mesh, built.model, built.model_config
    chat = tok.render_conversation(built.tokenizer, _SAMPLE_CHAT)
    rows = options.batch_size or mesh.shape["data"] * mesh.shape["fsdp"]
    input_ids = jax.random.randint(
        jax.random.key(config.seed), (rows, options.seq_len), 0, cfg.vocab_size, dtype=jnp.int32
    )
    input_ids = jax.device_put(
        input_ids, sharding.named_sharding(mesh, ("batch", "seq"), input_ids.shape)
    )
    forward = nnx.jit(lambda model, ids: model(ids))
    with sharding.activation_mesh(mesh):
        first_seconds, logits = _timed(forward, model, input_ids)
        again_seconds, logits = _timed(forward, model, input_ids)

    devices = mesh.devices.flatten()
    tokenizer_source = builder.tokenizer_dir(config) or "built-in"
    print(f"devices   {len(devices)} x {devices[0].device_kind}")
    print(f"mesh      {', '.join(f'{axis}={size}' for axis, size in mesh.shape.items())}")
    print(f"model     {source}")
    print(f"params    {models.count_params(cfg):,}")
    print(f"dtype     compute {config.model.dtype}, params {config.model.param_dtype}")
    print(
        f"tokenizer {tokenizer_source}, {len(built.tokenizer):,} tokens; a 4-turn sample chat is "
        f"{len(chat.ids)} ids, {sum(chat.loss_mask)} of them in the loss"
    )
    print(f"sample    {_sample(built, chat)}")
    print(f"logits    {tuple(logits.shape)} {logits.dtype}")
    print(f"forward   {first_seconds:.3f} s first call (with compile), {again_seconds:.3f} s again")
    return 0


def _sample(built: builder.Built, chat: Any) -> str:
    """Greedy reply to the sample chat through the generation engine, timed."""
    from swejax import sampling
    from swejax import tokenizer as tok

    prompt = chat.ids + tok.generation_prompt(built.tokenizer)
    start = time.perf_counter()
    (reply,) = sampling.generate(
        built.model,
        [prompt],
        max_new_tokens=_SAMPLE_TOKENS,
        stop_tokens=[tok.im_end_id(built.tokenizer)],
        mesh=built.mesh,
    )
    seconds = time.perf_counter() - start
    text = built.tokenizer.decode(reply.tokens)
    return f"{len(reply.tokens)} tokens greedy in {seconds:.2f} s (with compile): {text[:60]!r}"


def _timed(function, *args) -> tuple[float, Any]:
    import jax

    start = time.perf_counter()
    result = jax.block_until_ready(function(*args))
    return time.perf_counter() - start, result

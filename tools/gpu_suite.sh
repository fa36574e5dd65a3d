#!/usr/bin/env bash
# The GPU checks and benchmarks of swejax, in one run, on an image that already has JAX with CUDA,
# flax, optax, orbax and transformers. Every result is JSON (or a log) under $OUT.
#
#     OUT=gpu_results bash tools/gpu_suite.sh [WHEEL_DIR]
#     PARTS="attention train" bash tools/gpu_suite.sh   # some parts only
#
# PARTS (default all): check, kernels, decode, attention, train. At the default timeouts the
# whole suite takes up to about 23 minutes; where one command may run 10 at most, run
# "check kernels decode" and "attention train" as two calls.
#
# WHEEL_DIR, if given, holds wheels for pure-Python dependencies the image may lack (installed
# only when their import fails). swejax itself is used from this checkout, not installed.
set -uo pipefail
OUT=${OUT:-gpu_results}
WHEELS=${1:-}
mkdir -p "$OUT"
ROOT=$(cd "$(dirname "$0")/.." && pwd)

# Both import packages, swejax and swejax_kernels, are folders at the checkout's root.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ -n "$WHEELS" ]]; then
  for module in jaxtyping:jaxtyping ml_collections:ml_collections tqdm:tqdm; do
    name=${module%%:*}
    python -c "import $name" 2>/dev/null && continue
    [[ $name == jaxtyping ]] && python -m pip install -q --no-deps --no-index "$WHEELS"/wadler_lindig-*.whl
    python -m pip install -q --no-deps --no-index "$WHEELS"/"${module##*:}"-*.whl
  done
fi

python - > "$OUT/env.json" <<'EOF'
import json, jax, flax, optax
print(json.dumps({
    "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
    "devices": [d.device_kind for d in jax.devices()],
}))
EOF

PARTS=${PARTS:-check kernels decode attention train}
part() { [[ " $PARTS " == *" $1 "* ]]; }

# The default program path end to end on the GPU (mesh, model, tokenizer, engine, forward).
if part check; then
  timeout 60 python -m swejax.main check > "$OUT/check.log" 2>&1
  echo "check rc=$?" >> "$OUT/check.log"
fi

# The kernels compiled for this GPU against their references (tests/test_gpu.py; needs pytest).
if part kernels; then
  if python -c "import pytest" 2>/dev/null; then
    JAX_PLATFORMS=cuda,cpu timeout "${KERNELS_TIMEOUT:-300}" python -m pytest -m gpu \
      tests/test_gpu.py -q -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml" \
      > "$OUT/gpu_tests.log" 2>&1
    echo "rc=$?" >> "$OUT/gpu_tests.log"
  else
    echo "skipped: pytest is not installed" > "$OUT/gpu_tests.log"
  fi
fi

# Decode against the HBM roofline. One page per slot keeps it to one compiled bucket per size.
part decode && for preset in ${PRESETS:-qwen2.5-1.5b qwen2.5-7b}; do
  timeout "${DECODE_TIMEOUT:-200}" python tools/bench_decode.py --no-hf --roofline --preset "$preset" --layers 0 \
    --dtype bfloat16 --batch "${BATCHES:-1,16,64,256}" --prompt 128 --new 128 --page-size 256 \
    --turns 0 --split-layers 1,0 > "$OUT/decode_$preset.json" 2> "$OUT/decode_$preset.log"
  echo "rc=$?" >> "$OUT/decode_$preset.log"
done

# Attention kernels: flash against cuDNN and the XLA reference, forward and forward+backward.
if part attention; then
  timeout "${ATTENTION_TIMEOUT:-240}" python tools/bench_attention.py \
    --seqs "${SEQS:-4096,16384,32768,131072}" --out "$OUT/attention.json" > "$OUT/attention.log" 2>&1
  echo "rc=$?" >> "$OUT/attention.log"
fi

# Training-step MFU of the 1.5B at 32k tokens, per attention choice.
part train && for attention in ${TRAIN_ATTENTION:-flash cudnn}; do
  timeout "${TRAIN_TIMEOUT:-200}" python tools/bench_train.py --preset qwen2.5-1.5b --seq 32768 \
    --attention "$attention" --out "$OUT/train_$attention.json" > "$OUT/train_$attention.log" 2>&1
  echo "rc=$?" >> "$OUT/train_$attention.log"
done

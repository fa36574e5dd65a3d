"""Eight fake CPU devices, so every sharding test runs real multi-device layouts."""

import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# One persistent compilation cache for the whole session: both xdist workers and every child
# process a test starts (they inherit the environment) compile the same tiny-model programs,
# and compiling is most of the suite's time on 2 cores. A size limit turns on JAX's file lock,
# so the two workers never read an entry the other is still writing. The controller (the
# process without PYTEST_XDIST_WORKER) makes it before the workers start and removes it last.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ and not os.environ.get(
    "PYTEST_XDIST_WORKER"
)
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="swejax-test-jax-cache-")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# The longest files first: with `pytest -n 2` each file runs whole on one worker, and a long
# file that starts last leaves the other worker idle at the end.
_FIRST = ("test_pods.py", "test_run.py", "test_tpu_compile.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return _FIRST.index(name) if name in _FIRST else len(_FIRST)

    items.sort(key=rank)  # stable: the order within a file is kept


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

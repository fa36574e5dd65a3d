#!/usr/bin/env bash
# Set up swejax on a fresh Debian machine, as root. Safe to run again.
#
#     bash tools/setup.sh --main     # what the main job needs: bubblewrap, git, the system
#                                    # Python's pytest (the built-in tasks' tests run on it),
#                                    # and the virtual environment with swejax
#     bash tools/setup.sh            # everything the tests need too: the test extras, the TPU
#                                    # compiler, and a Docker engine with the task images
#     SWEJAX_NO_DOCKER=1 bash tools/setup.sh        # no Docker engine (the docker tests skip)
#     SWEJAX_NO_TPU_COMPILER=1 bash tools/setup.sh  # no libtpu (the TPU compile tests skip)
#     SWEJAX_NO_CHROMIUM=1 bash tools/setup.sh      # no headless browser (the report's browser
#                                                   # tests skip)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

main_only=""
case "${1:-}" in
  --main) main_only=1 ;;
  "") ;;
  *) echo "usage: bash tools/setup.sh [--main]" >&2; exit 2 ;;
esac

packages=(bubblewrap git python3-pytest python3-venv)
[[ -z "$main_only" && -z "${SWEJAX_NO_DOCKER:-}" ]] && packages+=(docker.io debootstrap)
# Chromium renders report.html headless in tests/test_report.py. Without its recommends (a
# desktop's GL drivers, printing, power and notification daemons): a headless page needs none.
browser=()
[[ -z "$main_only" && -z "${SWEJAX_NO_CHROMIUM:-}" ]] && browser+=(chromium)
if ! dpkg -s "${packages[@]}" "${browser[@]}" > /dev/null 2>&1; then
  apt-get update -q
  apt-get install -y -q "${packages[@]}"
  if [[ ${#browser[@]} -gt 0 ]]; then
    apt-get install -y -q --no-install-recommends "${browser[@]}"
  fi
fi

python3 -m venv .venv
if [[ -n "$main_only" ]]; then
  .venv/bin/pip install -q -e .
  exit 0
fi
.venv/bin/pip install -q -e '.[test]'

# The TPU compiler (libtpu, the version jax[tpu] pins for this jaxlib), for compiling TPU
# programs on this machine without a TPU (swejax/tpu_compiler.py). Beside the venv, not in it:
# on the import path it would make every JAX process look for a TPU.
if [[ -z "${SWEJAX_NO_TPU_COMPILER:-}" ]]; then
  libtpu=$(.venv/bin/python -c "import importlib.metadata as m
print(next(r.split(';')[0].strip() for r in m.requires('jax') if r.startswith('libtpu')))")
  .venv/bin/pip install -q --no-deps --upgrade --target .tpu_compiler "$libtpu"
fi

if [[ -n "${SWEJAX_NO_DOCKER:-}" ]]; then
  exit 0
fi
if ! docker info > /dev/null 2>&1; then
  # vfs needs no kernel overlay support: slow to copy layers, but it runs anywhere.
  nohup dockerd --storage-driver=vfs > /var/log/swejax-dockerd.log 2>&1 &
  for _ in $(seq 60); do
    docker info > /dev/null 2>&1 && break
    sleep 1
  done
  docker info > /dev/null 2>&1 || { tail -20 /var/log/swejax-dockerd.log; exit 1; }
fi
# The base image and the task images the docker tests run (all 20: drop --only).
.venv/bin/python tools/build_images.py --only swejax__b_roman_repeat,swejax__a_semver_prerelease

#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and torch with CUDA: build the extension with the CUDA kernels, run the
# CUDA tests, and time both kernels against torch (fft_filter vs torch.fft, cross_attention vs SDPA).
#     bash benchmarks/cuda_check.sh            (writes $OUT/cuda_bench.md when OUT is set)
set -euo pipefail
PY="${PYTHON:-python3}"  # on the GPU machines python3 is the interpreter that has torch
cd "$(dirname "$0")/.."
export DDE_BUILD_TESTING=ON DDE_CUDA=ON DDE_CUDA_ARCHITECTURES="${DDE_CUDA_ARCHITECTURES:-90}"
# --no-deps: the GPU machine may have no network; the kernels need only numpy (and torch for the tests)
"$PY" -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -3
"$PY" -c "from diffdefect_edge.kernels import build_info; import json; print(json.dumps(build_info(), indent=1))"
# the timings run even when a test fails (one call on a lent GPU shows both); the exit status reports the tests
tests=0
"$PY" -m pytest -q tests/test_kernels.py tests/test_kernels_dlpack.py tests/test_ops.py -m cuda -p no:cacheprovider || tests=$?
"$PY" benchmarks/cuda_bench.py | tee "${OUT:-/tmp}/cuda_bench.md"
exit "$tests"

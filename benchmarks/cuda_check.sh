#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and torch with CUDA: build the extension with the CUDA kernels, run the
# CUDA tests, and time both kernels against torch (fft_filter vs torch.fft, cross_attention vs SDPA).
#     bash benchmarks/cuda_check.sh            (writes $OUT/cuda_bench.md when OUT is set)
set -euo pipefail
cd "$(dirname "$0")/.."
export DDE_CUDA=ON DDE_CUDA_ARCHITECTURES="${DDE_CUDA_ARCHITECTURES:-90}"
python -m pip install -q --no-build-isolation -e . 2>&1 | tail -3
python -c "from diffdefect_edge.kernels import build_info; import json; print(json.dumps(build_info(), indent=1))"
python -m pytest -q tests/test_kernels.py -m cuda -p no:cacheprovider
python benchmarks/cuda_bench.py | tee "${OUT:-/tmp}/cuda_bench.md"

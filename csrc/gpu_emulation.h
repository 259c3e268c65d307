// Test hooks: the CUDA kernels' step programs (csrc/cuda/*_program.h) run on the host, so that the tests check
// the GPU code's arithmetic and indexing on machines without a GPU.
#pragma once
#include <pybind11/pybind11.h>

namespace dde {
// Adds _fft_filter_gpu_steps and _cross_attention_gpu_steps to the module.
void register_gpu_emulation(pybind11::module_& m);
}  // namespace dde

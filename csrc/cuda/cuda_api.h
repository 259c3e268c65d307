// Plain C ABI between the CUDA translation units and the pybind11 bindings.
// Every function returns 0 on success or a cudaError_t value; messages come from dde_cuda_error_string.
#pragma once
#include <cstddef>
#include <cstdint>

extern "C" {
// Number of CUDA devices the driver reports; 0 when there is no driver or no device (never fails).
int dde_cuda_device_count();
// Name and compute capability of a device; returns non-zero on error.
int dde_cuda_device_props(int device, char* name, size_t name_len, int* major, int* minor);
// Runs a real kernel (fills n floats with i*alpha, copies back, checks): proves a device is usable.
int dde_cuda_selftest(int device, int n, float alpha, int* ok);
const char* dde_cuda_error_string(int code);
// The calling thread's current device, and setting it (the kernels launch on the current device).
int dde_cuda_get_device(int* device);
int dde_cuda_set_device(int device);
}

extern "C" {
// Device that owns ptr, or -1 for host / unregistered memory.
int dde_cuda_pointer_device(const void* ptr);
// fft_filter on device arrays, launched on `stream`: x, y (planes, H, W); mask (H, W/2+1) or
// (mask_channels, H, W/2+1) when mask_channels > 0. radH/radW: the FFT radices of H and W in pass order
// (dde::fft_radices). Own fused kernel (csrc/cuda/fft_filter_program.h), no cuFFT.
int dde_cuda_fft_filter(const float* x, const float* mask, float* y, int64_t planes, int64_t mask_channels, int H,
                        int W, const int* radH, int nH, const int* radW, int nW, void* stream);
// Flash-style attention on device arrays (groups, L, D), launched on `stream`.
int dde_cuda_cross_attention(const float* q, const float* k, const float* v, float* out, int64_t groups,
                             int64_t Lq, int64_t Lk, int D, float scale, void* stream);
}

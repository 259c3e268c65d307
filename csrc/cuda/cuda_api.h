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
}

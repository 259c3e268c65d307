// Device discovery and a self-test kernel: a device counts as usable only if a kernel really runs on it.
#include <cuda_runtime.h>

#include <vector>

#include "cuda/cuda_api.h"

namespace {

__global__ void iota_scale_kernel(float* out, int n, float alpha) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = static_cast<float>(i) * alpha;
}

}  // namespace

extern "C" int dde_cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

extern "C" int dde_cuda_device_props(int device, char* name, size_t name_len, int* major, int* minor) {
  cudaDeviceProp prop;
  cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) return static_cast<int>(err);
  size_t i = 0;
  for (; i + 1 < name_len && prop.name[i] != '\0'; ++i) name[i] = prop.name[i];
  if (name_len > 0) name[i] = '\0';
  *major = prop.major;
  *minor = prop.minor;
  return 0;
}

extern "C" int dde_cuda_selftest(int device, int n, float alpha, int* ok) {
  *ok = 0;
  cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) return static_cast<int>(err);
  float* d_out = nullptr;
  err = cudaMalloc(&d_out, sizeof(float) * n);
  if (err != cudaSuccess) return static_cast<int>(err);
  iota_scale_kernel<<<(n + 255) / 256, 256>>>(d_out, n, alpha);
  err = cudaGetLastError();
  std::vector<float> host(n);
  if (err == cudaSuccess) err = cudaMemcpy(host.data(), d_out, sizeof(float) * n, cudaMemcpyDeviceToHost);
  cudaFree(d_out);
  if (err != cudaSuccess) return static_cast<int>(err);
  int good = 1;
  for (int i = 0; i < n; ++i) good &= (host[i] == static_cast<float>(i) * alpha);
  *ok = good;
  return 0;
}

extern "C" int dde_cuda_get_device(int* device) { return static_cast<int>(cudaGetDevice(device)); }

extern "C" int dde_cuda_set_device(int device) { return static_cast<int>(cudaSetDevice(device)); }

extern "C" const char* dde_cuda_error_string(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

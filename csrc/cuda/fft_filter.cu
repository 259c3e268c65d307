// fft_filter on CUDA: our own fused kernel (no cuFFT). One thread block filters one plane at a time entirely
// in its work area (shared memory when the plane fits, else a global workspace per block): row FFTs, column
// FFTs, the mask multiply, and the inverse transforms, as the steps of csrc/cuda/fft_filter_program.h, so the
// input is read once and the output written once. Mixed-radix Stockham FFTs: any H and W.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/cuda_api.h"
#include "cuda/fft_filter_program.h"

namespace {

using dde::gpu_fft::cf;
using dde::gpu_fft::Program;

constexpr int kThreads = 256;  // at most
static_assert(sizeof(Program) <= 4096, "the program must fit in the kernel's 4 KiB of arguments");

__global__ void __launch_bounds__(kThreads)
    fft_filter_kernel(const float* __restrict__ x, const float* __restrict__ mask, float* __restrict__ y,
                      int64_t planes, int64_t mask_channels, const __grid_constant__ Program prog, cf* global_work) {
  extern __shared__ cf smem[];
  const int H = prog.H, W = prog.W, Wc = prog.Wc;
  cf* rootW = smem;
  cf* rootH = rootW + W;
  cf* work = global_work ? global_work + static_cast<int64_t>(blockIdx.x) * 2 * prog.buffer : rootH + H;
  cf* const buf[2] = {work, work + prog.buffer};
  dde::gpu_fft::fill_roots(rootW, W, threadIdx.x, blockDim.x);
  dde::gpu_fft::fill_roots(rootH, H, threadIdx.x, blockDim.x);
  __syncthreads();
  const int64_t plane_size = static_cast<int64_t>(H) * W, mask_size = static_cast<int64_t>(H) * Wc;
  for (int64_t p = blockIdx.x; p < planes; p += gridDim.x) {
    const float* m = mask + (mask_channels > 0 ? (p % mask_channels) * mask_size : 0);
    for (int i = 0; i < prog.nsteps; ++i) {
      dde::gpu_fft::run_step(prog, prog.steps[i], x + p * plane_size, m, y + p * plane_size, buf, rootW, rootH,
                             threadIdx.x, blockDim.x);
      __syncthreads();
    }
  }
}

}  // namespace

extern "C" int dde_cuda_fft_filter(const float* x, const float* mask, float* y, int64_t planes, int64_t mask_channels,
                                   int H, int W, const int* radH, int nH, const int* radW, int nW, void* stream) {
  if (planes == 0) return 0;
  Program prog;
  if (!dde::gpu_fft::make_program(H, W, radH, nH, radW, nW, &prog)) return static_cast<int>(cudaErrorInvalidValue);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  int device = 0, max_smem = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return static_cast<int>(err);
  const size_t tables = sizeof(cf) * (H + W), work = sizeof(cf) * 2 * static_cast<size_t>(prog.buffer);
  const bool in_shared = tables + work <= static_cast<size_t>(max_smem);
  const size_t smem = in_shared ? tables + work : tables;
  if (smem > static_cast<size_t>(max_smem)) return static_cast<int>(cudaErrorInvalidValue);  // H + W too large
  if (smem > 48 * 1024) {
    err = cudaFuncSetAttribute(fft_filter_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return static_cast<int>(err);
  }
  // threads per block: about one per 4 elements of a work buffer (64 to 256), so that small planes (20 x 20: a
  // radix-4 row pass has 50 butterflies) do not leave most of a block idle and more of them fit on an SM
  const int threads = std::min(kThreads, std::max(64, (prog.buffer / 4 + 31) / 32 * 32));
  int per_sm = 0;
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fft_filter_kernel, threads, smem);
  if (err != cudaSuccess) return static_cast<int>(err);
  // one resident wave of blocks, each looping over planes (the root tables are built once per block)
  const int64_t blocks = std::min<int64_t>(planes, static_cast<int64_t>(std::max(per_sm, 1)) * sms);
  cf* global_work = nullptr;
  if (!in_shared) {
    err = cudaMallocAsync(reinterpret_cast<void**>(&global_work), work * blocks, s);
    if (err != cudaSuccess) return static_cast<int>(err);
  }
  fft_filter_kernel<<<static_cast<unsigned>(blocks), threads, smem, s>>>(x, mask, y, planes, mask_channels, prog,
                                                                         global_work);
  err = cudaGetLastError();
  if (global_work) cudaFreeAsync(global_work, s);
  return static_cast<int>(err);
}

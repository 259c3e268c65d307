// fft_filter on CUDA: one block per plane. The plane's half spectrum lives in shared memory (or in a
// global workspace when it does not fit); row DFT -> column DFT -> mask -> inverse column DFT -> inverse
// row DFT all happen in that one kernel, so the mask multiply is fused and nothing else touches memory.
// Twiddles come from a per-block table computed in double precision.
#include <cuda_runtime.h>

#include "cuda/cuda_api.h"

namespace {

__device__ inline float2 cmul(float2 a, float2 b) { return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x); }

// twiddle table: tw[j] = exp(-2 pi i j / n)
__device__ void fill_twiddles(float2* tw, int n) {
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    double s, c;
    sincospi(-2.0 * j / n, &s, &c);
    tw[j] = make_float2(static_cast<float>(c), static_cast<float>(s));
  }
}

__global__ void fft_filter_kernel(const float* __restrict__ x, const float* __restrict__ mask, float* __restrict__ y,
                                  int64_t mask_channels, int H, int W, float2* global_work) {
  extern __shared__ float2 smem[];
  const int Wc = W / 2 + 1;
  const int64_t p = blockIdx.x;
  float2* twH = smem;
  float2* twW = twH + H;
  float2* spec = global_work ? global_work + p * 2 * static_cast<int64_t>(H) * Wc : twW + W;
  float2* tmp = spec + static_cast<int64_t>(H) * Wc;
  float* plane = reinterpret_cast<float*>(tmp);  // the real plane fits in tmp (2 * Wc >= W)
  fill_twiddles(twH, H);
  fill_twiddles(twW, W);
  const float* xp = x + p * H * W;
  for (int i = threadIdx.x; i < H * W; i += blockDim.x) plane[i] = xp[i];
  __syncthreads();

  // real DFT of each row
  for (int i = threadIdx.x; i < H * Wc; i += blockDim.x) {
    const int r = i / Wc, k = i % Wc;
    float2 acc = make_float2(0.f, 0.f);
    for (int w = 0; w < W; ++w) {
      const float2 t = twW[(k * w) % W];
      acc.x += plane[r * W + w] * t.x;
      acc.y += plane[r * W + w] * t.y;
    }
    spec[i] = acc;
  }
  __syncthreads();

  // column DFT, times the mask
  const float* m = mask + (mask_channels > 0 ? (p % mask_channels) * H * Wc : 0);
  for (int i = threadIdx.x; i < H * Wc; i += blockDim.x) {
    const int kh = i / Wc, k = i % Wc;
    float2 acc = make_float2(0.f, 0.f);
    for (int h = 0; h < H; ++h) {
      const float2 v = cmul(spec[h * Wc + k], twH[(kh * h) % H]);
      acc.x += v.x;
      acc.y += v.y;
    }
    tmp[i] = make_float2(acc.x * m[i], acc.y * m[i]);
  }
  __syncthreads();

  // inverse column DFT (conjugate twiddles)
  for (int i = threadIdx.x; i < H * Wc; i += blockDim.x) {
    const int h = i / Wc, k = i % Wc;
    float2 acc = make_float2(0.f, 0.f);
    for (int kh = 0; kh < H; ++kh) {
      float2 t = twH[(kh * h) % H];
      t.y = -t.y;
      const float2 v = cmul(tmp[kh * Wc + k], t);
      acc.x += v.x;
      acc.y += v.y;
    }
    spec[i] = acc;
  }
  __syncthreads();

  // inverse real DFT of each row: bins 1..ceil(W/2)-1 count twice; DC and Nyquist once, real part only
  const float scale = 1.0f / (static_cast<float>(H) * W);
  float* yp = y + p * H * W;
  for (int i = threadIdx.x; i < H * W; i += blockDim.x) {
    const int r = i / W, w = i % W;
    float acc = 0.f;
    for (int k = 0; k < Wc; ++k) {
      const float2 z = spec[r * Wc + k];
      const float2 t = twW[(k * w) % W];  // e^{-i..}; Re(z e^{+i..}) = z.x t.x + z.y t.y
      const float weight = (k == 0 || 2 * k == W) ? 1.f : 2.f;
      acc += weight * (z.x * t.x + z.y * t.y);
    }
    yp[i] = acc * scale;
  }
}

}  // namespace

extern "C" int dde_cuda_fft_filter(const float* x, const float* mask, float* y, int64_t planes, int64_t mask_channels,
                                   int H, int W, void* stream) {
  if (planes == 0) return 0;
  const int Wc = W / 2 + 1;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const size_t tables = sizeof(float2) * (H + W);
  const size_t work = sizeof(float2) * 2 * static_cast<size_t>(H) * Wc;
  int device = 0, max_smem = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  float2* global_work = nullptr;
  size_t smem = tables + work;
  if (smem > static_cast<size_t>(max_smem)) {  // large planes: spectrum in a global workspace
    cudaError_t err = cudaMallocAsync(reinterpret_cast<void**>(&global_work), work * planes, s);
    if (err != cudaSuccess) return static_cast<int>(err);
    smem = tables;
  }
  if (smem > 48 * 1024) cudaFuncSetAttribute(fft_filter_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem));
  fft_filter_kernel<<<static_cast<unsigned>(planes), 256, smem, s>>>(x, mask, y, mask_channels, H, W, global_work);
  cudaError_t err = cudaGetLastError();
  if (global_work) cudaFreeAsync(global_work, s);
  return static_cast<int>(err);
}

// Flash-style cross-attention on CUDA: a block of 4 warps owns 16 query rows (4 per warp) and streams
// over key tiles of 32 keys held in shared memory, with an online softmax; no Lq x Lk matrix exists.
#include <cuda_runtime.h>

#include <cfloat>

#include "cuda/cuda_api.h"

namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kRows = kWarps * kRowsPerWarp;
constexpr int kKeys = 32;
constexpr int kMaxD = 128;

__global__ void attention_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                                 float* __restrict__ out, int64_t Lq, int64_t Lk, int D, float scale) {
  __shared__ float Qs[kRows][kMaxD];
  __shared__ float Ks[kKeys][kMaxD + 1];  // +1: lanes read different keys at the same d without bank conflicts
  __shared__ float Vs[kKeys][kMaxD];
  const int64_t g = blockIdx.y;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* qg = q + g * Lq * D;
  const float* kg = k + g * Lk * D;
  const float* vg = v + g * Lk * D;

  for (int i = threadIdx.x; i < kRows * D; i += blockDim.x) {
    const int r = i / D, d = i % D;
    Qs[r][d] = (row0 + r < Lq) ? qg[(row0 + r) * D + d] * scale : 0.f;
  }
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kMaxD / 32];
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -FLT_MAX;
    l[r] = 0.f;
    for (int t = 0; t < kMaxD / 32; ++t) acc[r][t] = 0.f;
  }
  const int dchunks = (D + 31) / 32;

  for (int64_t j0 = 0; j0 < Lk; j0 += kKeys) {
    __syncthreads();
    for (int i = threadIdx.x; i < kKeys * D; i += blockDim.x) {
      const int j = i / D, d = i % D;
      const bool valid = j0 + j < Lk;
      Ks[j][d] = valid ? kg[(j0 + j) * D + d] : 0.f;
      Vs[j][d] = valid ? vg[(j0 + j) * D + d] : 0.f;
    }
    __syncthreads();
    const bool key_valid = j0 + lane < Lk;
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const float* qr = Qs[warp * kRowsPerWarp + r];
      float s = 0.f;
      for (int d = 0; d < D; ++d) s += qr[d] * Ks[lane][d];
      s = key_valid ? s : -FLT_MAX;
      float mx = s;
      for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_new = fmaxf(m[r], mx);
      const float corr = __expf(m[r] - m_new);
      const float p = key_valid ? __expf(s - m_new) : 0.f;
      float sum = p;
      for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      l[r] = l[r] * corr + sum;
      m[r] = m_new;
      for (int t = 0; t < dchunks; ++t) acc[r][t] *= corr;
      for (int j = 0; j < kKeys; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
        for (int t = 0; t < dchunks; ++t) {
          const int d = lane + 32 * t;
          if (d < D) acc[r][t] += pj * Vs[j][d];
        }
      }
    }
  }
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t row = row0 + warp * kRowsPerWarp + r;
    if (row >= Lq) continue;
    const float inv = 1.f / l[r];
    for (int t = 0; t < dchunks; ++t) {
      const int d = lane + 32 * t;
      if (d < D) out[(g * Lq + row) * D + d] = acc[r][t] * inv;
    }
  }
}

}  // namespace

extern "C" int dde_cuda_cross_attention(const float* q, const float* k, const float* v, float* out, int64_t groups,
                                        int64_t Lq, int64_t Lk, int D, float scale, void* stream) {
  if (groups == 0 || Lq == 0) return 0;
  if (D > kMaxD || groups > 65535) return static_cast<int>(cudaErrorInvalidValue);
  dim3 grid(static_cast<unsigned>((Lq + kRows - 1) / kRows), static_cast<unsigned>(groups));
  attention_kernel<<<grid, kWarps * 32, 0, static_cast<cudaStream_t>(stream)>>>(q, k, v, out, Lq, Lk, D, scale);
  return static_cast<int>(cudaGetLastError());
}

extern "C" int dde_cuda_pointer_device(const void* ptr) {
  cudaPointerAttributes attr;
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device : -1;
}

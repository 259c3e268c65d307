// Flash-style cross-attention on CUDA: a block of 128 threads owns 64 query rows and streams over tiles of 64
// keys with an online softmax, each thread holding a 4 x 8 block of scores and 4 rows of the output in
// registers; no Lq x Lk matrix exists. The phases are written once in csrc/cuda/attention_program.h (which the
// tests also run on the host).
#include <cuda_runtime.h>

#include "cuda/attention_program.h"
#include "cuda/cuda_api.h"

namespace {

namespace ga = dde::gpu_attention;

template <int DD>
__global__ void __launch_bounds__(ga::kThreads)
    attention_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                     float* __restrict__ out, int Lq, int Lk, int D, float qscale) {
  extern __shared__ float4 smem[];  // 16-byte aligned: the tiles are read with vector loads
  constexpr int Dp = DD * ga::CG;
  const ga::Tiles sh = ga::carve(reinterpret_cast<float*>(smem), Dp);
  const int64_t g = blockIdx.y;
  const ga::Problem pb{q + g * Lq * D, k + g * Lk * D, v + g * Lk * D, out + g * Lq * D,
                       Lq, Lk, D, Dp, static_cast<int>(blockIdx.x) * ga::BQ, qscale};
  const int tid = threadIdx.x;
  ga::State<DD> st;
  ga::init_state(st);
  ga::load_queries(pb, sh, tid, blockDim.x);
  for (int j0 = 0; j0 < Lk; j0 += ga::BK) {
    ga::load_keys_values(pb, sh, j0, tid, blockDim.x);
    __syncthreads();
    ga::scores(pb, sh, j0, st, tid);
    __syncthreads();
    ga::softmax(sh, st, tid);
    __syncthreads();
    ga::accumulate_pv(pb, sh, st, tid);
    __syncthreads();
  }
  ga::store(pb, st, tid);
}

template <int DD>
int launch(const float* q, const float* k, const float* v, float* out, int64_t groups, int Lq, int Lk, int D,
           float qscale, cudaStream_t stream) {
  const size_t smem = sizeof(float) * ga::tile_floats(DD * ga::CG);
  if (smem > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(attention_kernel<DD>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return static_cast<int>(err);
  }
  const dim3 grid(static_cast<unsigned>((Lq + ga::BQ - 1) / ga::BQ), static_cast<unsigned>(groups));
  attention_kernel<DD><<<grid, ga::kThreads, smem, stream>>>(q, k, v, out, Lq, Lk, D, qscale);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

extern "C" int dde_cuda_cross_attention(const float* q, const float* k, const float* v, float* out, int64_t groups,
                                        int64_t Lq, int64_t Lk, int D, float scale, void* stream) {
  if (groups == 0 || Lq == 0) return 0;
  if (D < 1 || D > ga::kMaxD || groups > 65535 || Lq >= (int64_t{1} << 31) || Lk < 1 || Lk >= (int64_t{1} << 31))
    return static_cast<int>(cudaErrorInvalidValue);
  const float qscale = scale * ga::kLog2e;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int lq = static_cast<int>(Lq), lk = static_cast<int>(Lk);
  switch (ga::padded_dim(D) / ga::CG) {
    case 4: return launch<4>(q, k, v, out, groups, lq, lk, D, qscale, s);
    case 8: return launch<8>(q, k, v, out, groups, lq, lk, D, qscale, s);
    case 12: return launch<12>(q, k, v, out, groups, lq, lk, D, qscale, s);
    default: return launch<16>(q, k, v, out, groups, lq, lk, D, qscale, s);
  }
}

extern "C" int dde_cuda_pointer_device(const void* ptr) {
  cudaPointerAttributes attr;
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device : -1;
}

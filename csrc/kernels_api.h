// The CPU kernels, compiled once per instruction set (generic SSE2, AVX2+FMA, AVX-512) and picked at run time.
// Inputs are C-contiguous float32 arrays already checked by the caller (module.cpp).
#pragma once
#include <cstdint>

namespace dde {

#define DDE_DECLARE_CPU_KERNELS(NS)                                                                     \
  namespace NS {                                                                                        \
  /* y = irfft2(rfft2(x) * mask, s=(H, W)); x, y: (planes, H, W); mask: (H, W/2+1), or (C, H, W/2+1) */ \
  /* when mask_channels == C > 0, plane p then uses mask[p % C]. */                                     \
  void fft_filter(const float* x, const float* mask, float* y, int64_t planes, int64_t mask_channels,  \
                  int H, int W, int threads);                                                           \
  /* out = softmax(q k^T * scale) v over (groups, L, D) slabs, streaming over key tiles. */             \
  void cross_attention(const float* q, const float* k, const float* v, float* out, int64_t groups,     \
                       int64_t Lq, int64_t Lk, int D, float scale, int threads);                        \
  }

DDE_DECLARE_CPU_KERNELS(isa_generic)
DDE_DECLARE_CPU_KERNELS(isa_avx2)
DDE_DECLARE_CPU_KERNELS(isa_avx512)

// The variant for this CPU: "avx512", "avx2" or "generic" (DDE_KERNEL_ISA in the environment may lower it).
const char* selected_isa();
void fft_filter(const float* x, const float* mask, float* y, int64_t planes, int64_t mask_channels, int H,
                int W, int threads);
void cross_attention(const float* q, const float* k, const float* v, float* out, int64_t groups, int64_t Lq,
                     int64_t Lk, int D, float scale, int threads);

}  // namespace dde

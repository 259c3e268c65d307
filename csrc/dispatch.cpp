// Run-time choice of the kernel variant compiled for the best instruction set this CPU supports.
#include <cstdlib>
#include <cstring>

#include "kernels_api.h"

namespace dde {

namespace {
enum class Isa { generic, avx2, avx512 };

Isa detect() {
  Isa best = Isa::generic;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::avx2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) best = Isa::avx512;
#endif
  // DDE_KERNEL_ISA=generic|avx2 forces a lower variant (for testing every variant on one machine)
  if (const char* want = std::getenv("DDE_KERNEL_ISA")) {
    if (std::strcmp(want, "generic") == 0) best = Isa::generic;
    else if (std::strcmp(want, "avx2") == 0 && best == Isa::avx512) best = Isa::avx2;
  }
  return best;
}

Isa isa() {
  static const Isa chosen = detect();
  return chosen;
}
}  // namespace

const char* selected_isa() {
  switch (isa()) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

void fft_filter(const float* x, const float* mask, float* y, int64_t planes, int64_t mask_channels, int H,
                int W, int threads) {
  switch (isa()) {
    case Isa::avx512: return isa_avx512::fft_filter(x, mask, y, planes, mask_channels, H, W, threads);
    case Isa::avx2: return isa_avx2::fft_filter(x, mask, y, planes, mask_channels, H, W, threads);
    default: return isa_generic::fft_filter(x, mask, y, planes, mask_channels, H, W, threads);
  }
}

void cross_attention(const float* q, const float* k, const float* v, float* out, int64_t groups, int64_t Lq,
                     int64_t Lk, int D, float scale, int threads) {
  switch (isa()) {
    case Isa::avx512: return isa_avx512::cross_attention(q, k, v, out, groups, Lq, Lk, D, scale, threads);
    case Isa::avx2: return isa_avx2::cross_attention(q, k, v, out, groups, Lq, Lk, D, scale, threads);
    default: return isa_generic::cross_attention(q, k, v, out, groups, Lq, Lk, D, scale, threads);
  }
}

}  // namespace dde

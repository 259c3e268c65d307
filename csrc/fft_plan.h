// FFT plans: factorisation of a length into radices and the twiddles of each Stockham pass.
// Plain scalar data, built once per call and shared read-only by all threads and ISA variants.
#pragma once
#include <vector>

namespace dde {

struct FftPass {
  int radix;  // p
  int span;   // L: length of the sub-DFTs this pass combines (product of earlier radices)
  // twiddle w_{pL}^{j k} for j in [1, p), k in [0, L): index (j - 1) * L + k; forward sign (e^{-i...})
  std::vector<float> tw_re, tw_im;
  // for odd radices: cos(2 pi j u / p), sin(2 pi j u / p) for j, u in [0, p): index j * p + u
  std::vector<float> rot_cos, rot_sin;
};

// The radices of n in pass order (4s, then 2, then odd factors ascending); empty for n = 1. Used by the CPU
// plans below and by the CUDA kernel's step program (csrc/cuda/fft_filter_program.h).
std::vector<int> fft_radices(int n);

struct FftPlan {
  int n = 1;
  std::vector<FftPass> passes;
  explicit FftPlan(int n);
};

}  // namespace dde

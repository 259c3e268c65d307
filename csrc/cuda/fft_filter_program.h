// The CUDA fft_filter's algorithm, written once for the GPU kernel (csrc/cuda/fft_filter.cu) and for a host
// run of the very same steps (module.cpp's _fft_filter_gpu_steps, which the tests compare with numpy on
// machines without a GPU).
//
// One plane at a time per thread block, all in a work area of two complex buffers (shared memory, or global
// memory for planes too large for it) plus a table of roots of unity per length:
//   LOAD      rows 2r and 2r+1 packed as one complex row  (R = ceil(H/2) rows of W)
//   W passes  Stockham FFT of the R rows                   (radix 2, 3, 4, 5 written out, others generic)
//   UNPACK    the two real rows' half spectra              (H rows of Wc = W/2 + 1)
//   H passes  FFT of the Wc columns
//   MASK      times mask / (H W)                           (the filter: fused, nothing leaves the block)
//   H passes  inverse FFT of the columns
//   REPACK    two half spectra -> one complex row          (imaginary parts of the DC and Nyquist bins dropped,
//                                                           as irfft does)
//   W passes  inverse FFT of the R rows; STORE real parts -> row 2r, imaginary parts -> row 2r+1
// Every step reads one buffer and writes the other (or updates elements in place), and each thread handles
// whole elements, so a step's result does not depend on how its items are spread over threads or in what order
// they run: the GPU separates steps by __syncthreads(), the host runs them one after the other.
#pragma once
#include <cstdint>

#include "cuda/host_device.h"

namespace dde {
namespace gpu_fft {

struct cf {
  float re, im;
};

DDE_HD cf cadd(cf a, cf b) { return {a.re + b.re, a.im + b.im}; }
DDE_HD cf csub(cf a, cf b) { return {a.re - b.re, a.im - b.im}; }
DDE_HD cf cmul(cf a, cf b) { return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re}; }
DDE_HD cf cscale(cf a, float c) { return {a.re * c, a.im * c}; }
DDE_HD cf conj_if(cf a, bool c) { return {a.re, c ? -a.im : a.im}; }
// times -i (forward) or +i (inverse)
DDE_HD cf rot90(cf a, bool inverse) { return inverse ? cf{-a.im, a.re} : cf{a.im, -a.re}; }

// n / d for n < 2^31 by a multiply-high and a shift (the divisors are fixed per step; an integer division on a
// GPU is a long instruction sequence). Granlund-Montgomery: s = ceil(log2 d), m = floor(2^32 (2^s - d) / d) + 1.
struct FastDiv {
  uint32_t d, m, s;
};

inline FastDiv make_fast_div(uint32_t d) {
  uint32_t s = 0;
  while ((uint64_t{1} << s) < d) ++s;
  const uint64_t m = ((uint64_t{1} << 32) * ((uint64_t{1} << s) - d)) / d + 1;
  return FastDiv{d, static_cast<uint32_t>(m), s};
}

DDE_HD uint32_t div(uint32_t n, FastDiv f) {
#ifdef __CUDA_ARCH__
  const uint32_t hi = __umulhi(n, f.m);
#else
  const uint32_t hi = static_cast<uint32_t>((static_cast<uint64_t>(n) * f.m) >> 32);
#endif
  return (hi + n) >> f.s;
}

enum StepKind : int { LOAD, ROW_PASS, UNPACK, COL_PASS, MASK, REPACK, STORE };

// One step. Passes: radix p over transforms of length n whose sub-DFTs so far have length L; transform t's
// element e is at buffer[t * tstride + e * estride]; `fastest` spreads consecutive items over transforms
// (columns: neighbouring threads then touch neighbouring elements) rather than over one transform's elements.
struct Step {
  int kind, src, dst;  // src/dst: buffer 0 or 1
  int n, p, L, count, tstride, estride, fastest, inverse;
  FastDiv by_per, by_count, by_L;  // per = n / p butterflies per transform
};

// The program travels as a kernel argument (at most 4 KiB): 48 steps allow 21 radices of H and W together
// (two lengths of 4096 take 12).
constexpr int kMaxSteps = 48;

struct Program {
  int H, W, Wc, R;  // R = ceil(H / 2) row pairs
  int buffer;  // complex numbers per buffer: max(H * Wc, R * W)
  int nsteps;
  FastDiv by_W, by_Wc;
  Step steps[kMaxSteps];
};

// Builds the step list for H x W planes from the radices of H and of W (in pass order; their product is the
// length; an empty list for length 1). Returns false for planes of 2^30 elements or more (32-bit indexing) or
// radix lists too long for kMaxSteps.
inline bool make_program(int H, int W, const int* radH, int nH, const int* radW, int nW, Program* prog) {
  if (H < 1 || W < 1 || static_cast<int64_t>(H) * (W + 2) >= (int64_t{1} << 30) || 5 + 2 * (nH + nW) > kMaxSteps)
    return false;
  Program& g = *prog;
  g.H = H;
  g.W = W;
  g.Wc = W / 2 + 1;
  g.R = (H + 1) / 2;
  g.buffer = H * g.Wc > g.R * W ? H * g.Wc : g.R * W;
  g.by_W = make_fast_div(W);
  g.by_Wc = make_fast_div(g.Wc);
  g.nsteps = 0;
  int cur = 0;  // buffer holding the current data
  auto add = [&](int kind, int src, int dst) {
    Step& s = g.steps[g.nsteps++];
    s = Step{};
    s.kind = kind;
    s.src = src;
    s.dst = dst;
  };
  auto passes = [&](int kind, const int* radices, int count, int n, bool inverse) {
    int L = 1;
    for (int i = 0; i < count; ++i) {
      const bool rows = kind == ROW_PASS;
      add(kind, cur, 1 - cur);
      Step& s = g.steps[g.nsteps - 1];
      s.n = n;
      s.p = radices[i];
      s.L = L;
      s.count = rows ? g.R : g.Wc;
      s.tstride = rows ? W : 1;
      s.estride = rows ? 1 : g.Wc;
      s.fastest = rows ? 0 : 1;
      s.inverse = inverse ? 1 : 0;
      s.by_per = make_fast_div(n / s.p);
      s.by_count = make_fast_div(s.count);
      s.by_L = make_fast_div(L);
      cur = 1 - cur;
      L *= radices[i];
    }
  };
  add(LOAD, -1, cur);
  passes(ROW_PASS, radW, nW, W, false);
  add(UNPACK, cur, 1 - cur);
  cur = 1 - cur;
  passes(COL_PASS, radH, nH, H, false);
  add(MASK, cur, cur);
  passes(COL_PASS, radH, nH, H, true);
  add(REPACK, cur, 1 - cur);
  cur = 1 - cur;
  passes(ROW_PASS, radW, nW, W, true);
  add(STORE, cur, -1);
  return true;
}

// root[t] = exp(-2 pi i t / n) for t < n, items tid, tid + nthreads, ...
DDE_HD void fill_roots(cf* root, int n, int tid, int nthreads) {
  for (int t = tid; t < n; t += nthreads) {
    double s, c;
#ifdef __CUDA_ARCH__
    sincospi(-2.0 * t / n, &s, &c);
#else
    s = std::sin(-2.0 * M_PI * t / n);
    c = std::cos(-2.0 * M_PI * t / n);
#endif
    root[t] = cf{static_cast<float>(c), static_cast<float>(s)};
  }
}

// x_j of butterfly (q, k) times w_{pL}^{j k} = root[j k m] (m = n / (p L); j k m < n)
DDE_HD cf twiddled(const cf* in, int j, int istep, int k, int m, const cf* root, bool inverse) {
  const cf x = in[j * istep];
  return k ? cmul(x, conj_if(root[j * k * m], inverse)) : x;
}

// One Stockham pass (natural order in and out): out[(q p L + k + u L)] = sum_j x_j w_{pL}^{jk} w_p^{ju}.
DDE_HD void stockham_pass(const Step& s, const cf* src, cf* dst, const cf* root, int tid, int nthreads) {
  const int n = s.n, p = s.p, L = s.L, m = n / (p * L), per = n / p;
  const bool inv = s.inverse != 0;
  const int total = s.count * per;
  const int istep = m * L * s.estride, ostep = L * s.estride;
  for (int i = tid; i < total; i += nthreads) {
    int t, b;
    if (s.fastest) {
      b = static_cast<int>(div(i, s.by_count));
      t = i - b * s.count;
    } else {
      t = static_cast<int>(div(i, s.by_per));
      b = i - t * per;
    }
    const int q = static_cast<int>(div(b, s.by_L)), k = b - q * L;
    const cf* in = src + t * s.tstride + (q * L + k) * s.estride;
    cf* out = dst + t * s.tstride + (q * p * L + k) * s.estride;
    if (p == 2) {
      const cf x0 = in[0], x1 = twiddled(in, 1, istep, k, m, root, inv);
      out[0] = cadd(x0, x1);
      out[ostep] = csub(x0, x1);
    } else if (p == 4) {
      const cf x0 = in[0], x1 = twiddled(in, 1, istep, k, m, root, inv), x2 = twiddled(in, 2, istep, k, m, root, inv),
               x3 = twiddled(in, 3, istep, k, m, root, inv);
      const cf s02 = cadd(x0, x2), d02 = csub(x0, x2), s13 = cadd(x1, x3), r13 = rot90(csub(x1, x3), inv);
      out[0] = cadd(s02, s13);
      out[ostep] = cadd(d02, r13);
      out[2 * ostep] = csub(s02, s13);
      out[3 * ostep] = csub(d02, r13);
    } else if (p == 3) {
      const float s60 = 0.86602540378443865f;  // sin(2 pi / 3)
      const cf x0 = in[0], x1 = twiddled(in, 1, istep, k, m, root, inv), x2 = twiddled(in, 2, istep, k, m, root, inv);
      const cf a = cadd(x1, x2), A = csub(x0, cscale(a, 0.5f)), iB = rot90(cscale(csub(x1, x2), s60), inv);
      out[0] = cadd(x0, a);
      out[ostep] = cadd(A, iB);
      out[2 * ostep] = csub(A, iB);
    } else if (p == 5) {
      const float c1 = 0.30901699437494742f, c2 = -0.80901699437494742f;  // cos(2 pi / 5), cos(4 pi / 5)
      const float s1 = 0.95105651629515357f, s2 = 0.58778525229247313f;   // sin(2 pi / 5), sin(4 pi / 5)
      const cf x0 = in[0], x1 = twiddled(in, 1, istep, k, m, root, inv), x2 = twiddled(in, 2, istep, k, m, root, inv),
               x3 = twiddled(in, 3, istep, k, m, root, inv), x4 = twiddled(in, 4, istep, k, m, root, inv);
      const cf a1 = cadd(x1, x4), b1 = csub(x1, x4), a2 = cadd(x2, x3), b2 = csub(x2, x3);
      const cf A1 = cadd(x0, cadd(cscale(a1, c1), cscale(a2, c2))), A2 = cadd(x0, cadd(cscale(a1, c2), cscale(a2, c1)));
      const cf iB1 = rot90(cadd(cscale(b1, s1), cscale(b2, s2)), inv);
      const cf iB2 = rot90(csub(cscale(b1, s2), cscale(b2, s1)), inv);
      out[0] = cadd(x0, cadd(a1, a2));
      out[ostep] = cadd(A1, iB1);
      out[4 * ostep] = csub(A1, iB1);
      out[2 * ostep] = cadd(A2, iB2);
      out[3 * ostep] = csub(A2, iB2);
    } else {  // any other radix: a p-point DFT with w_p^t = root[t n / p]
      for (int u = 0; u < p; ++u) {
        cf acc = {0.f, 0.f};
        for (int j = 0, ju = 0; j < p; ++j, ju = ju + u < p ? ju + u : ju + u - p)  // ju = j u mod p
          acc = cadd(acc, cmul(twiddled(in, j, istep, k, m, root, inv), conj_if(root[ju * per], inv)));
        out[u * ostep] = acc;
      }
    }
  }
}

// Runs one step for thread `tid` of `nthreads` on plane x -> y. buf[0], buf[1]: the two work buffers; rootW,
// rootH: the root tables of lengths W and H; mask: this plane's (H, Wc) mask.
DDE_HD void run_step(const Program& g, const Step& s, const float* x, const float* mask, float* y, cf* const buf[2],
                     const cf* rootW, const cf* rootH, int tid, int nthreads) {
  const int H = g.H, W = g.W, Wc = g.Wc, R = g.R;
  switch (s.kind) {
    case LOAD: {  // x[2r][w] + i x[2r+1][w]; the last row pair of an odd H gets 0 as its imaginary row
      cf* dst = buf[s.dst];
      for (int i = tid; i < R * W; i += nthreads) {
        const int r = static_cast<int>(div(i, g.by_W)), w = i - r * W;
        dst[i] = cf{x[(2 * r) * W + w], 2 * r + 1 < H ? x[(2 * r + 1) * W + w] : 0.f};
      }
      break;
    }
    case ROW_PASS:
      stockham_pass(s, buf[s.src], buf[s.dst], rootW, tid, nthreads);
      break;
    case COL_PASS:
      stockham_pass(s, buf[s.src], buf[s.dst], rootH, tid, nthreads);
      break;
    case UNPACK: {  // Z = X_a + i X_b  ->  X_a[k] = (Z[k] + conj Z[-k]) / 2, X_b[k] = (Z[k] - conj Z[-k]) / (2 i)
      const cf* src = buf[s.src];
      cf* dst = buf[s.dst];
      for (int i = tid; i < R * Wc; i += nthreads) {
        const int r = static_cast<int>(div(i, g.by_Wc)), k = i - r * Wc;
        const cf z = src[r * W + k], zm = src[r * W + (k ? W - k : 0)];
        dst[(2 * r) * Wc + k] = cf{0.5f * (z.re + zm.re), 0.5f * (z.im - zm.im)};
        if (2 * r + 1 < H) dst[(2 * r + 1) * Wc + k] = cf{0.5f * (z.im + zm.im), -0.5f * (z.re - zm.re)};
      }
      break;
    }
    case MASK: {
      cf* data = buf[s.dst];
      const float scale = 1.0f / (static_cast<float>(H) * static_cast<float>(W));
      for (int i = tid; i < H * Wc; i += nthreads) {
        const float f = mask[i] * scale;
        data[i] = cf{data[i].re * f, data[i].im * f};
      }
      break;
    }
    case REPACK: {  // row pair r: Z[w] = X_a[w] + i X_b[w] over the whole row, X[w] = conj X[W - w] for w >= Wc
      const cf* src = buf[s.src];
      cf* dst = buf[s.dst];
      for (int i = tid; i < R * W; i += nthreads) {
        const int r = static_cast<int>(div(i, g.by_W)), w = i - r * W;
        const bool mirrored = w >= Wc;
        const int k = mirrored ? W - w : w;
        const bool real_bin = k == 0 || 2 * k == W;  // irfft reads only the real part of these bins
        cf a = src[(2 * r) * Wc + k];
        cf b = 2 * r + 1 < H ? src[(2 * r + 1) * Wc + k] : cf{0.f, 0.f};
        if (real_bin) a.im = b.im = 0.f;
        if (mirrored) a.im = -a.im, b.im = -b.im;
        dst[i] = cf{a.re - b.im, a.im + b.re};
      }
      break;
    }
    case STORE: {
      const cf* src = buf[s.src];
      for (int i = tid; i < H * W; i += nthreads) {
        const int h = static_cast<int>(div(i, g.by_W)), w = i - h * W;
        const cf z = src[(h / 2) * W + w];
        y[i] = h % 2 ? z.im : z.re;
      }
      break;
    }
    default:
      break;
  }
}

}  // namespace gpu_fft
}  // namespace dde

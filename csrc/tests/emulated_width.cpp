// Runs the CPU kernels at a SIMD width this machine may not have (-DDDE_VBYTES=64: the AVX-512 variant's
// tiles and register blocks), emulated by GCC on narrower registers, against double-precision direct
// references. Built and run by tests/test_kernel_widths.py; exits 0 when every case is within tolerance.
#define DDE_ISA_NS isa_emulated
#include "../kernels_impl.inc"

#include <cmath>
#include <cstdio>
#include <random>

namespace {

std::mt19937 rng(0);
std::normal_distribution<float> normal(0.f, 1.f);

std::vector<float> random_vector(size_t n, float sigma) {
  std::vector<float> v(n);
  for (float& x : v) x = sigma * normal(rng);
  return v;
}

// max |out - softmax(q k^T scale) v| over (G, Lq, D), the reference in double
double attention_error(int G, int Lq, int Lk, int D) {
  const auto q = random_vector(size_t(G) * Lq * D, 3.f), k = random_vector(size_t(G) * Lk * D, 1.f),
             v = random_vector(size_t(G) * Lk * D, 1.f);
  std::vector<float> out(q.size());
  const float scale = 1.0f / std::sqrt(float(D));
  dde::isa_emulated::cross_attention(q.data(), k.data(), v.data(), out.data(), G, Lq, Lk, D, scale, 2);
  double worst = 0;
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < Lq; ++i) {
      std::vector<double> p(Lk);
      double mx = -INFINITY, sum = 0;
      for (int j = 0; j < Lk; ++j) {
        double s = 0;
        for (int d = 0; d < D; ++d) s += double(q[(size_t(g) * Lq + i) * D + d]) * k[(size_t(g) * Lk + j) * D + d];
        p[j] = s * scale;
        mx = std::max(mx, p[j]);
      }
      for (double& x : p) sum += (x = std::exp(x - mx));
      for (int d = 0; d < D; ++d) {
        double o = 0;
        for (int j = 0; j < Lk; ++j) o += p[j] * v[(size_t(g) * Lk + j) * D + d];
        worst = std::max(worst, std::fabs(o / sum - out[(size_t(g) * Lq + i) * D + d]));
      }
    }
  return worst;
}

// ||y - irfft2(rfft2(x) * mask)|| / ||reference|| over P planes, the reference a direct 2-D DFT in double
double fft_filter_error(int P, int H, int W) {
  const int Wh = W / 2 + 1;
  const auto x = random_vector(size_t(P) * H * W, 1.f);
  auto mask = random_vector(size_t(H) * Wh, 1.f);
  for (float& m : mask) m = std::fabs(m);
  std::vector<float> y(x.size());
  dde::isa_emulated::fft_filter(x.data(), mask.data(), y.data(), P, 0, H, W, 2);
  double err = 0, norm = 0;
  for (int p = 0; p < P; ++p) {
    const float* xp = &x[size_t(p) * H * W];
    std::vector<double> re(size_t(H) * W), im(size_t(H) * W);
    for (int u = 0; u < H; ++u)
      for (int w = 0; w < W; ++w) {
        double a = 0, b = 0;
        for (int r = 0; r < H; ++r)
          for (int c = 0; c < W; ++c) {
            const double angle = -2 * M_PI * (double(u) * r / H + double(w) * c / W);
            a += xp[r * W + c] * std::cos(angle);
            b += xp[r * W + c] * std::sin(angle);
          }
        // the mask covers the half spectrum; the other half is its Hermitian mirror
        const int mu = w < Wh ? u : (H - u) % H, mw = w < Wh ? w : W - w;
        re[size_t(u) * W + w] = a * mask[size_t(mu) * Wh + mw];
        im[size_t(u) * W + w] = b * mask[size_t(mu) * Wh + mw];
      }
    for (int r = 0; r < H; ++r)
      for (int c = 0; c < W; ++c) {
        double a = 0;
        for (int u = 0; u < H; ++u)
          for (int w = 0; w < W; ++w) {
            const double angle = 2 * M_PI * (double(u) * r / H + double(w) * c / W);
            a += re[size_t(u) * W + w] * std::cos(angle) - im[size_t(u) * W + w] * std::sin(angle);
          }
        a /= H * W;
        const double diff = a - y[(size_t(p) * H + r) * W + c];
        err += diff * diff;
        norm += a * a;
      }
  }
  return std::sqrt(err / std::max(norm, 1e-300));
}

}  // namespace

int main() {
  int failed = 0;
  const int attention_shapes[][4] = {{3, 1, 1, 8},    {2, 37, 50, 16},  {1, 100, 7, 32},  {2, 64, 300, 64},
                                     {1, 5, 1000, 128}, {2, 130, 129, 20}, {1, 64, 64, 32}};
  for (const auto& s : attention_shapes) {
    const double e = attention_error(s[0], s[1], s[2], s[3]);
    std::printf("cross_attention G=%d Lq=%d Lk=%d D=%d: max abs error %.2e\n", s[0], s[1], s[2], s[3], e);
    failed += !(e < 1e-4);
  }
  const int fft_shapes[][3] = {{40, 1, 1}, {33, 7, 5}, {17, 20, 25}, {3, 37, 41}, {2, 40, 40}};
  for (const auto& s : fft_shapes) {
    const double e = fft_filter_error(s[0], s[1], s[2]);
    std::printf("fft_filter P=%d H=%d W=%d: relative error %.2e\n", s[0], s[1], s[2], e);
    failed += !(e < 1e-5);
  }
  std::printf(failed ? "FAILED: %d cases\n" : "all ok\n", failed);
  return failed != 0;
}

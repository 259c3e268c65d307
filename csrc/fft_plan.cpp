#include "fft_plan.h"

#include <cmath>

namespace dde {

std::vector<int> fft_radices(int n) {
  std::vector<int> radices;
  while (n % 4 == 0) { radices.push_back(4); n /= 4; }
  while (n % 2 == 0) { radices.push_back(2); n /= 2; }
  for (int p = 3; n > 1; p += 2) {
    while (n % p == 0) { radices.push_back(p); n /= p; }
    if (p * p > n && n > 1) { radices.push_back(n); n = 1; }
  }
  return radices;
}

FftPlan::FftPlan(int n_) : n(n_) {
  int span = 1;
  for (int p : fft_radices(n)) {
    FftPass pass;
    pass.radix = p;
    pass.span = span;
    const int big = p * span;
    pass.tw_re.resize(static_cast<size_t>(p - 1) * span);
    pass.tw_im.resize(pass.tw_re.size());
    for (int j = 1; j < p; ++j)
      for (int k = 0; k < span; ++k) {
        // exact integer reduction keeps the angle accurate for long transforms
        const double a = -2.0 * M_PI * static_cast<double>((static_cast<long long>(j) * k) % big) / big;
        pass.tw_re[(j - 1) * span + k] = static_cast<float>(std::cos(a));
        pass.tw_im[(j - 1) * span + k] = static_cast<float>(std::sin(a));
      }
    if (p % 2 == 1) {
      pass.rot_cos.resize(static_cast<size_t>(p) * p);
      pass.rot_sin.resize(pass.rot_cos.size());
      for (int j = 0; j < p; ++j)
        for (int u = 0; u < p; ++u) {
          const double a = 2.0 * M_PI * static_cast<double>((j * u) % p) / p;
          pass.rot_cos[j * p + u] = static_cast<float>(std::cos(a));
          pass.rot_sin[j * p + u] = static_cast<float>(std::sin(a));
        }
    }
    passes.push_back(std::move(pass));
    span = big;
  }
}

}  // namespace dde

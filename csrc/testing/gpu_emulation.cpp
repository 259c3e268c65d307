// _dde_gpu_emulation: a test-only module (built with DDE_BUILD_TESTING=ON, never in the wheel). The CUDA kernels'
// step programs (csrc/cuda/*_program.h) run on the host, so that the tests check the GPU code's arithmetic and
// indexing on machines without a GPU.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "cuda/attention_program.h"
#include "cuda/fft_filter_program.h"
#include "fft_plan.h"
#include "py_checks.h"

namespace dde {
namespace {

// The CUDA fft_filter's steps (csrc/cuda/fft_filter_program.h) run on the host, `block_threads` emulated
// threads per step, in reverse thread order when `reverse`: what the GPU kernel computes, checkable without a GPU
// (and a step whose result depended on the order of its threads would show as a difference between the orders).
farray fft_filter_gpu_steps(const py::array& x_in, const py::array& mask_in, int block_threads, bool reverse) {
  farray x = checked(x_in, "x"), mask = checked(mask_in, "mask");
  const int64_t mask_channels = fft_mask_channels(x, mask);
  require(block_threads >= 1, "block_threads must be >= 1");
  const int64_t C = x.shape(1), planes = x.shape(0) * C;
  const int H = static_cast<int>(x.shape(2)), W = static_cast<int>(x.shape(3)), Wc = W / 2 + 1;
  const std::vector<int> radH = dde::fft_radices(H), radW = dde::fft_radices(W);
  dde::gpu_fft::Program prog;
  require(dde::gpu_fft::make_program(H, W, radH.data(), static_cast<int>(radH.size()), radW.data(),
                                     static_cast<int>(radW.size()), &prog),
          "H and W have too many prime factors");
  std::vector<dde::gpu_fft::cf> roots(H + W), work(2 * prog.buffer);
  dde::gpu_fft::cf* const buf[2] = {work.data(), work.data() + prog.buffer};
  dde::gpu_fft::fill_roots(roots.data(), W, 0, 1);
  dde::gpu_fft::fill_roots(roots.data() + W, H, 0, 1);
  farray y({x.shape(0), C, static_cast<py::ssize_t>(H), static_cast<py::ssize_t>(W)});
  const int64_t plane_size = static_cast<int64_t>(H) * W, mask_size = static_cast<int64_t>(H) * Wc;
  for (int64_t p = 0; p < planes; ++p) {
    const float* m = mask.data() + (mask_channels > 0 ? (p % mask_channels) * mask_size : 0);
    for (int i = 0; i < prog.nsteps; ++i)
      for (int t = 0; t < block_threads; ++t)
        dde::gpu_fft::run_step(prog, prog.steps[i], x.data() + p * plane_size, m, y.mutable_data() + p * plane_size,
                               buf, roots.data(), roots.data() + W, reverse ? block_threads - 1 - t : t,
                               block_threads);
  }
  return y;
}

// The CUDA cross_attention's phases (csrc/cuda/attention_program.h) run on the host for every block, its 128
// threads one after the other in each phase (in reverse order when `reverse`), each with its own registers.
template <int DD>
void cross_attention_gpu_phases(const float* q, const float* k, const float* v, float* out, int64_t groups, int Lq,
                                int Lk, int D, float scale, bool reverse) {
  namespace ga = dde::gpu_attention;
  constexpr int Dp = DD * ga::CG;
  std::vector<float> shared(ga::tile_floats(Dp));
  const ga::Tiles sh = ga::carve(shared.data(), Dp);
  std::vector<ga::State<DD>> regs(ga::kThreads);
  auto each = [&](auto&& phase) {
    for (int t = 0; t < ga::kThreads; ++t) phase(reverse ? ga::kThreads - 1 - t : t);
  };
  for (int64_t g = 0; g < groups; ++g)
    for (int row0 = 0; row0 < Lq; row0 += ga::BQ) {
      const ga::Problem pb{q + g * Lq * D, k + g * Lk * D, v + g * Lk * D, out + g * Lq * D,
                           Lq, Lk, D, Dp, row0, scale * ga::kLog2e};
      each([&](int t) { ga::init_state(regs[t]); });
      each([&](int t) { ga::load_queries(pb, sh, t, ga::kThreads); });
      for (int j0 = 0; j0 < Lk; j0 += ga::BK) {
        each([&](int t) { ga::load_keys_values(pb, sh, j0, t, ga::kThreads); });
        each([&](int t) { ga::scores(pb, sh, j0, regs[t], t); });
        each([&](int t) { ga::softmax(sh, regs[t], t); });
        each([&](int t) { ga::accumulate_pv(pb, sh, regs[t], t); });
      }
      each([&](int t) { ga::store(pb, regs[t], t); });
    }
}

farray cross_attention_gpu_steps(const py::array& q_in, const py::array& k_in, const py::array& v_in, double scale,
                                 bool reverse) {
  farray q = checked(q_in, "q"), k = checked(k_in, "k"), v = checked(v_in, "v");
  check_attention_shapes(q, k, v);
  const int64_t B = q.shape(0), Hh = q.shape(1), Lq = q.shape(2), D = q.shape(3), Lk = k.shape(2);
  farray out({B, Hh, Lq, D});
  const int dd = dde::gpu_attention::padded_dim(static_cast<int>(D)) / dde::gpu_attention::CG;
  auto run = dd == 4 ? cross_attention_gpu_phases<4> : dd == 8 ? cross_attention_gpu_phases<8>
           : dd == 12 ? cross_attention_gpu_phases<12> : cross_attention_gpu_phases<16>;
  run(q.data(), k.data(), v.data(), out.mutable_data(), B * Hh, static_cast<int>(Lq), static_cast<int>(Lk),
      static_cast<int>(D), static_cast<float>(scale), reverse);
  return out;
}

}  // namespace

}  // namespace dde

namespace py = pybind11;

PYBIND11_MODULE(_dde_gpu_emulation, m) {
  m.doc() = "Test hooks: the CUDA kernels' step programs run on the host.";
  m.def("fft_filter_gpu_steps", &dde::fft_filter_gpu_steps, py::arg("x"), py::arg("mask"),
        py::arg("block_threads") = 256, py::arg("reverse") = false,
        "Test hook: the CUDA fft_filter's steps run on the host with block_threads emulated threads per step.");
  m.def("cross_attention_gpu_steps", &dde::cross_attention_gpu_steps, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("scale"), py::arg("reverse") = false,
        "Test hook: the CUDA cross_attention's phases run on the host, thread by thread.");
}

// pybind11 entry point of diffdefect_edge._kernels. Arguments are checked here too (never crash on bad
// input); the friendlier checks and conversions live in diffdefect_edge/kernels.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "build_info.h"
#include "fft_plan.h"
#include "kernels_api.h"
#include "nms.h"
#include "py_checks.h"
#ifdef DDE_WITH_CUDA
#include "cuda/cuda_api.h"
#endif

namespace py = pybind11;

namespace {

using dde::check_attention_shapes;
using dde::checked;
using dde::farray;
using dde::fft_mask_channels;
using dde::output_array;
using dde::require;
using dde::shape_str;

farray fft_filter(const py::array& x_in, const py::array& mask_in, int threads, const py::object& out) {
  farray x = checked(x_in, "x"), mask = checked(mask_in, "mask");
  const int64_t mask_channels = fft_mask_channels(x, mask);
  const int64_t B = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
  farray y = output_array(out, {B, C, H, W}, {&x, &mask});
  const float* xp = x.data();
  const float* mp = mask.data();
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    dde::fft_filter(xp, mp, yp, B * C, mask_channels, static_cast<int>(H), static_cast<int>(W), threads);
  }
  return y;
}

farray cross_attention(const py::array& q_in, const py::array& k_in, const py::array& v_in, double scale,
                       int threads, const py::object& out_in) {
  farray q = checked(q_in, "q"), k = checked(k_in, "k"), v = checked(v_in, "v");
  check_attention_shapes(q, k, v);
  const int64_t B = q.shape(0), Hh = q.shape(1), Lq = q.shape(2), D = q.shape(3), Lk = k.shape(2);
  require(std::isfinite(scale), "scale must be finite");
  farray out = output_array(out_in, {B, Hh, Lq, D}, {&q, &k, &v});
  const float *qp = q.data(), *kp = k.data(), *vp = v.data();
  float* op = out.mutable_data();
  {
    py::gil_scoped_release release;
    dde::cross_attention(qp, kp, vp, op, B * Hh, Lq, Lk, static_cast<int>(D), static_cast<float>(scale), threads);
  }
  return out;
}

py::array_t<int64_t> nms(const py::array& boxes_in, const py::array& scores_in,
                        const py::array_t<int64_t, py::array::c_style>& class_ids, double iou_threshold) {
  farray boxes = checked(boxes_in, "boxes"), scores = checked(scores_in, "scores");
  require(boxes.ndim() == 2 && boxes.shape(1) == 4, "boxes must have shape (N, 4), got " + shape_str(boxes));
  const int64_t n = boxes.shape(0);
  require(scores.ndim() == 1 && scores.shape(0) == n, "scores must have shape (N,) = (" + std::to_string(n) +
                                                          ",), got " + shape_str(scores));
  require(class_ids.ndim() == 1 && class_ids.shape(0) == n, "class_ids must have shape (N,) = (" +
                                                                std::to_string(n) + ",), got " + shape_str(class_ids));
  require(std::isfinite(iou_threshold), "iou_threshold must be finite");
  py::array_t<int64_t> keep(n);
  const float *bp = boxes.data(), *sp = scores.data();
  const int64_t* cp = class_ids.data();
  int64_t* kp = keep.mutable_data();
  int64_t count;
  {
    py::gil_scoped_release release;
    count = dde::nms(bp, sp, cp, n, static_cast<float>(iou_threshold), kp);
  }
  keep.resize({count});
  return keep;
}

py::tuple decode_detections(const py::array& raw_in, double conf, double iou_threshold, int64_t max_candidates,
                            int64_t max_det, bool multi_label, bool agnostic) {
  farray raw = checked(raw_in, "raw");
  require(raw.ndim() == 2 && raw.shape(1) >= 5, "raw must have shape (anchors, 4 + classes), got " + shape_str(raw));
  require(std::isfinite(conf) && std::isfinite(iou_threshold), "conf and iou_threshold must be finite");
  require(max_candidates >= 1, "max_candidates must be >= 1, got " + std::to_string(max_candidates));
  const float* rp = raw.data();
  dde::Decoded d;
  {
    py::gil_scoped_release release;
    d = dde::decode_detections(rp, raw.shape(0), raw.shape(1), static_cast<float>(conf),
                               static_cast<float>(iou_threshold), max_candidates, max_det, multi_label, agnostic);
  }
  const auto n = static_cast<py::ssize_t>(d.scores.size());
  farray boxes({n, py::ssize_t{4}});
  farray scores(n);
  py::array_t<int64_t> class_ids(n);
  std::copy(d.boxes.begin(), d.boxes.end(), boxes.mutable_data());
  std::copy(d.scores.begin(), d.scores.end(), scores.mutable_data());
  std::copy(d.class_ids.begin(), d.class_ids.end(), class_ids.mutable_data());
  return py::make_tuple(boxes, scores, class_ids);
}

#ifdef DDE_WITH_CUDA
void cuda_check(int code, const char* what) {
  if (code != 0) throw std::runtime_error(std::string(what) + ": CUDA error: " + dde_cuda_error_string(code));
}

// Runs launch() with the device that owns `ptr` current (tensors may live on another device than the current
// one), then restores the caller's device.
template <class Launch>
int on_device_of(const void* ptr, Launch launch) {
  const int device = dde_cuda_pointer_device(ptr);
  int previous = 0, code = dde_cuda_get_device(&previous);
  if (code == 0 && device >= 0 && device != previous) code = dde_cuda_set_device(device);
  if (code != 0) return code;
  code = launch();
  if (device >= 0 && device != previous) {
    const int restored = dde_cuda_set_device(previous);
    if (code == 0) code = restored;
  }
  return code;
}
#endif

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "diffdefect-edge compiled kernels (CPU, and CUDA where compiled)";
  m.def("build_info", &dde::build_info,
        "Compiler, OpenMP threads, SIMD flags, whether CUDA code was compiled and a device is usable.");
  m.def("cpu_isa", &dde::selected_isa, "The CPU kernel variant in use: avx512, avx2 or generic.");
  m.def("fft_filter", &fft_filter, py::arg("x"), py::arg("mask"), py::arg("threads") = 0, py::arg("out") = py::none(),
        "y = irfft2(rfft2(x) * mask) on float32 C-contiguous arrays; threads=0 uses all cores; written into out "
        "when given.");
  m.def("cross_attention", &cross_attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("scale"),
        py::arg("threads") = 0, py::arg("out") = py::none(),
        "softmax(q k^T * scale) v with a streaming softmax; written into out when given.");
  m.def("nms", &nms, py::arg("boxes"), py::arg("scores"), py::arg("class_ids"), py::arg("iou_threshold"),
        "Greedy class-aware NMS on C-contiguous float32 boxes (N, 4) xyxy and scores (N,), int64 class_ids (N,): "
        "kept indices, highest score first.");
  m.def("decode_detections", &decode_detections, py::arg("raw"), py::arg("conf"), py::arg("iou_threshold"),
        py::arg("max_candidates"), py::arg("max_det"), py::arg("multi_label") = false, py::arg("agnostic") = false,
        "One image's raw output (anchors, 4 + classes) float32 -> (boxes (N, 4), scores (N,), class_ids (N,)): "
        "each anchor's best class (every class with multi_label) above conf, at most max_candidates, NMS "
        "(class-aware unless agnostic), at most max_det, highest score first.");
#ifdef DDE_WITH_CUDA
  m.def("cuda_pointer_device",
        [](std::uintptr_t ptr) { return dde_cuda_pointer_device(reinterpret_cast<void*>(ptr)); });
  m.def("fft_filter_cuda",
        [](std::uintptr_t x, std::uintptr_t mask, std::uintptr_t y, int64_t planes, int64_t mask_channels, int H, int W,
           std::uintptr_t stream) {
          const std::vector<int> radH = dde::fft_radices(H), radW = dde::fft_radices(W);
          int code;
          {
            py::gil_scoped_release release;
            code = on_device_of(reinterpret_cast<const void*>(x), [&] {
              return dde_cuda_fft_filter(reinterpret_cast<const float*>(x), reinterpret_cast<const float*>(mask),
                                         reinterpret_cast<float*>(y), planes, mask_channels, H, W, radH.data(),
                                         static_cast<int>(radH.size()), radW.data(), static_cast<int>(radW.size()),
                                         reinterpret_cast<void*>(stream));
            });
          }
          cuda_check(code, "fft_filter");
        });
  m.def("cross_attention_cuda",
        [](std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t out, int64_t groups, int64_t Lq,
           int64_t Lk, int D, float scale, std::uintptr_t stream) {
          int code;
          {
            py::gil_scoped_release release;
            code = on_device_of(reinterpret_cast<const void*>(q), [&] {
              return dde_cuda_cross_attention(reinterpret_cast<const float*>(q), reinterpret_cast<const float*>(k),
                                              reinterpret_cast<const float*>(v), reinterpret_cast<float*>(out),
                                              groups, Lq, Lk, D, scale, reinterpret_cast<void*>(stream));
            });
          }
          cuda_check(code, "cross_attention");
        });
#endif
}

// Argument checks shared by the pybind11 bindings (module.cpp, gpu_emulation.cpp): bad input raises a Python
// TypeError/ValueError naming the argument, never a crash.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace dde {
namespace py = pybind11;

using farray = py::array_t<float, py::array::c_style>;

inline farray checked(const py::array& a, const char* name) {
  if (!py::isinstance<py::array_t<float>>(a) || a.dtype().kind() != 'f' || a.itemsize() != 4)
    throw py::type_error(std::string(name) + " must be a float32 array, got dtype " +
                         std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous");
  if (a.size() == 0) throw py::value_error(std::string(name) + " is empty");
  return py::reinterpret_borrow<farray>(a);
}

inline void require(bool ok, const std::string& msg) {
  if (!ok) throw py::value_error(msg);
}

// "(2, 3)", "(4,)" as Python prints a shape
inline std::string dims_str(const py::ssize_t* dims, size_t n) {
  std::string s = "(";
  for (size_t i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (n == 1 ? ",)" : ")");
}

inline std::string shape_str(const py::array& a) { return dims_str(a.shape(), static_cast<size_t>(a.ndim())); }

// Where a kernel writes its result: a new array when `out` is None, else `out` itself, which must be a writable
// C-contiguous float32 array of exactly `shape` sharing no byte with any of `inputs` (the kernels read their
// inputs after they start writing).
inline farray output_array(const py::object& out, const std::vector<py::ssize_t>& shape,
                           std::initializer_list<const farray*> inputs) {
  if (out.is_none()) return farray(shape);
  if (!py::isinstance<py::array>(out))
    throw py::type_error("out must be a float32 numpy array, got " + std::string(py::str(py::type::of(out))));
  farray o = checked(py::reinterpret_borrow<py::array>(out), "out");
  require(o.writeable(), "out is read-only");
  require(o.ndim() == static_cast<py::ssize_t>(shape.size()) && std::equal(shape.begin(), shape.end(), o.shape()),
          "out must have shape " + dims_str(shape.data(), shape.size()) + ", got " + shape_str(o));
  const auto* lo = reinterpret_cast<const char*>(o.data());
  const auto* hi = lo + o.nbytes();
  for (const farray* in : inputs) {
    const auto* in_lo = reinterpret_cast<const char*>(in->data());
    require(hi <= in_lo || in_lo + in->nbytes() <= lo, "out must not share memory with the inputs");
  }
  return o;
}

// fft_filter's x (B, C, H, W) and mask (H, W//2+1) or (C, H, W//2+1): returns the mask's channel count, 0 for a
// mask shared by all channels.
inline int64_t fft_mask_channels(const farray& x, const farray& mask) {
  require(x.ndim() == 4, "x must have shape (B, C, H, W), got " + shape_str(x));
  const int64_t C = x.shape(1), H = x.shape(2), W = x.shape(3), Wc = W / 2 + 1;
  require(H < (1 << 20) && W < (1 << 20), "x: H and W must be below 2**20");
  if (mask.ndim() == 2) {
    require(mask.shape(0) == H && mask.shape(1) == Wc, "mask must have shape (H, W//2+1) = (" + std::to_string(H) +
                                                             ", " + std::to_string(Wc) + "), got " + shape_str(mask));
    return 0;
  }
  if (mask.ndim() == 3) {
    require(mask.shape(0) == C && mask.shape(1) == H && mask.shape(2) == Wc,
            "mask must have shape (C, H, W//2+1) = (" + std::to_string(C) + ", " + std::to_string(H) + ", " +
                std::to_string(Wc) + "), got " + shape_str(mask));
    return C;
  }
  throw py::value_error("mask must have shape (H, W//2+1) or (C, H, W//2+1), got " + shape_str(mask));
}

// cross_attention's q (B, heads, Lq, D), k and v (B, heads, Lk, D), D <= 128.
inline void check_attention_shapes(const farray& q, const farray& k, const farray& v) {
  require(q.ndim() == 4, "q must have shape (B, heads, Lq, D), got " + shape_str(q));
  require(k.ndim() == 4, "k must have shape (B, heads, Lk, D), got " + shape_str(k));
  require(v.ndim() == 4, "v must have shape (B, heads, Lk, D), got " + shape_str(v));
  const int64_t B = q.shape(0), Hh = q.shape(1), D = q.shape(3), Lk = k.shape(2);
  require(D <= 128, "q: head dim D must be <= 128, got " + std::to_string(D));
  require(k.shape(0) == B && k.shape(1) == Hh && k.shape(3) == D,
          "k must have shape (B, heads, Lk, D) matching q " + shape_str(q) + ", got " + shape_str(k));
  require(v.shape(0) == B && v.shape(1) == Hh && v.shape(2) == Lk && v.shape(3) == D,
          "v must have the shape of k " + shape_str(k) + ", got " + shape_str(v));
}

}  // namespace dde

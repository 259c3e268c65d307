// Argument checks shared by the pybind11 bindings (module.cpp, gpu_emulation.cpp): bad input raises a Python
// TypeError/ValueError naming the argument, never a crash.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

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

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

}  // namespace dde

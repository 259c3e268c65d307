// pybind11 entry point of diffdefect_edge._kernels. Python-facing checks live in diffdefect_edge/kernels.py.
#include <pybind11/pybind11.h>

#include "build_info.h"

namespace py = pybind11;

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "diffdefect-edge compiled kernels (CPU, and CUDA where compiled)";
  m.def("build_info", &dde::build_info,
        "Compiler, OpenMP threads, SIMD flags, whether CUDA code was compiled and a device is usable.");
}

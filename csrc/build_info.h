#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace dde {
pybind11::dict build_info();
}

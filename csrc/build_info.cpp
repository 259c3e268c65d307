// build_info(): how this module was compiled and what it can use at run time.
#include "build_info.h"

#include <omp.h>

#include "build_config.h"

#include <string>
#include <vector>

#ifdef DDE_WITH_CUDA
#include "cuda/cuda_api.h"
#endif

namespace dde {

namespace py = pybind11;

static std::vector<std::string> compiled_simd_flags() {
  std::vector<std::string> flags;
#ifdef __SSE4_2__
  flags.emplace_back("sse4.2");
#endif
#ifdef __AVX__
  flags.emplace_back("avx");
#endif
#ifdef __AVX2__
  flags.emplace_back("avx2");
#endif
#ifdef __FMA__
  flags.emplace_back("fma");
#endif
#ifdef __AVX512F__
  flags.emplace_back("avx512f");
#endif
#ifdef __ARM_NEON
  flags.emplace_back("neon");
#endif
  return flags;
}

static std::vector<std::string> runtime_simd_flags() {
  std::vector<std::string> flags;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) flags.emplace_back("avx2");
  if (__builtin_cpu_supports("fma")) flags.emplace_back("fma");
  if (__builtin_cpu_supports("avx512f")) flags.emplace_back("avx512f");
#endif
  return flags;
}

py::dict build_info() {
  py::dict info;
  info["compiler"] = std::string(DDE_CXX_COMPILER);
  info["openmp_max_threads"] = omp_get_max_threads();
  info["simd_compiled"] = compiled_simd_flags();
  info["simd_runtime"] = runtime_simd_flags();
#ifdef DDE_WITH_CUDA
  info["cuda_compiled"] = true;
  info["cuda_compiler"] = std::string(DDE_CUDA_COMPILER);
  info["cuda_architectures"] = std::string(DDE_CUDA_ARCHS);
  int count = dde_cuda_device_count();
  info["cuda_device_count"] = count;
  bool usable = false;
  std::string device_name;
  if (count > 0) {
    int ok = 0;
    int err = dde_cuda_selftest(0, 1024, 0.5f, &ok);
    usable = (err == 0 && ok == 1);
    char name[256];
    int major = 0, minor = 0;
    if (dde_cuda_device_props(0, name, sizeof(name), &major, &minor) == 0)
      device_name = std::string(name) + " (sm_" + std::to_string(major) + std::to_string(minor) + ")";
  }
  info["cuda_device_usable"] = usable;
  info["cuda_device_name"] = device_name;
#else
  info["cuda_compiled"] = false;
  info["cuda_compiler"] = "";
  info["cuda_architectures"] = "";
  info["cuda_device_count"] = 0;
  info["cuda_device_usable"] = false;
  info["cuda_device_name"] = "";
#endif
  return info;
}

}  // namespace dde

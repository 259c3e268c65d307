// DDE_HD marks functions compiled for both the GPU kernels and their host runs in the tests
// (csrc/cuda/*_program.h): __host__ __device__ under nvcc, plain inline under the host compiler.
#pragma once

#ifdef __CUDACC__
#define DDE_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#define DDE_HD inline
#endif

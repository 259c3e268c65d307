// The CPU kernels compiled for one instruction set (flags set per file in CMakeLists.txt).
#define DDE_ISA_NS isa_avx512
#define DDE_VBYTES 64
#include "kernels_impl.inc"

// The CPU kernels compiled for one instruction set (flags set per file in CMakeLists.txt).
#define DDE_ISA_NS isa_avx2
#define DDE_VBYTES 32
#include "kernels_impl.inc"

// The CPU kernels compiled for one instruction set (flags set per file in CMakeLists.txt).
#define DDE_ISA_NS isa_generic
#define DDE_VBYTES 16
#include "kernels_impl.inc"

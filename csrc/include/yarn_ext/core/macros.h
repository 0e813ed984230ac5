// Portability macros for the torch-free YaRN core. Everything under core/ compiles with a plain
// C++17 compiler and with nvcc, so the CPU and CUDA kernels share one copy of the math.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define YARN_HOST_DEVICE __host__ __device__
#else
#define YARN_HOST_DEVICE
#endif

// Kept out of line on the GPU: for code that only rare work items run (the float64 cos/sin of a
// position outside the cache, about a thousand instructions per pair), so that it neither
// bloats nor spills the hot loop it is called from. The host compiler decides for itself.
#if defined(__CUDA_ARCH__)
#define YARN_DEVICE_NOINLINE __noinline__
#else
#define YARN_DEVICE_NOINLINE
#endif

// Full unrolling of short fixed-length loops, so that small arrays stay in registers on the GPU;
// and none, for loops whose body should appear once in the machine code (benchmarks/sass.py
// counts the instructions of one iteration).
// Only in the device compilation pass: the host compiler does not know the pragma.
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
#define YARN_UNROLL _Pragma("unroll")
#define YARN_NO_UNROLL _Pragma("unroll 1")
#else
#define YARN_UNROLL
#define YARN_NO_UNROLL
#endif

// The CPU kernels are compiled once per instruction set (csrc/cpu/vectorized/kernels.cpp with
// CPU_CAPABILITY=DEFAULT, AVX2, AVX512, as ATen does). The inline functions of these headers get
// a namespace per instruction set there; otherwise the linker would keep one copy - perhaps the
// AVX512 one - for every caller.
#if defined(CPU_CAPABILITY)
#define YARN_ISA_NAMESPACE_BEGIN inline namespace CPU_CAPABILITY {
#define YARN_ISA_NAMESPACE_END }
#else
#define YARN_ISA_NAMESPACE_BEGIN
#define YARN_ISA_NAMESPACE_END
#endif

// Portability macros for the torch-free YaRN core. Everything under core/ compiles with a plain
// C++17 compiler and with nvcc, so the CPU and CUDA kernels share one copy of the math.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define YARN_HOST_DEVICE __host__ __device__
#else
#define YARN_HOST_DEVICE
#endif

// Full unrolling of short fixed-length loops, so that small arrays stay in registers on the GPU.
// Only in the device compilation pass: the host compiler does not know the pragma.
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
#define YARN_UNROLL _Pragma("unroll")
#else
#define YARN_UNROLL
#endif

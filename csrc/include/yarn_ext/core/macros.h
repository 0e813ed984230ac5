// Portability macros for the torch-free YaRN core. Everything under core/ compiles with a plain
// C++17 compiler and with nvcc, so the CPU and CUDA kernels share one copy of the math.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define YARN_HOST_DEVICE __host__ __device__
#else
#define YARN_HOST_DEVICE
#endif

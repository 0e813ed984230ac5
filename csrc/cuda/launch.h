// Launch helpers shared by the CUDA kernels. Only c10/cuda headers: ATen/cuda/CUDAContext.h
// would pull in cuBLAS and cuSPARSE headers, which a minimal CUDA toolkit does not ship.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace yarn_ext::cuda {

// Streaming multiprocessors of the current device, queried once per device (no synchronization).
inline int sm_count() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> counts[kMaxDevices] = {};
  const int device = c10::cuda::current_device();
  if (device >= kMaxDevices) {
    int n = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    return n;
  }
  int n = counts[device].load(std::memory_order_relaxed);
  if (n == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    counts[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

// Blocks for a grid-stride loop over `work` items: enough to fill every SM `waves` times, never
// more than the work needs.
inline unsigned grid_size(int64_t work, int threads, int waves) {
  const int64_t needed = (work + threads - 1) / threads;
  return static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>(needed, int64_t{sm_count()} * waves)));
}

}  // namespace yarn_ext::cuda

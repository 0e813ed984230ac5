// Launch helpers shared by the CUDA kernels: the CUDA runtime and torch's C shim only (stable
// ABI), no c10/cuda.
#pragma once

#include <cuda_runtime.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/macros.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace yarn_ext::cuda {

// torch's current stream on the current device.
inline cudaStream_t current_stream() {
  void* stream = nullptr;
  const int32_t device = torch::stable::accelerator::getCurrentDeviceIndex();
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(device, &stream));
  return static_cast<cudaStream_t>(stream);
}

// Streaming multiprocessors of the current device, queried once per device (no synchronization).
inline int sm_count() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> counts[kMaxDevices] = {};
  int device = 0;
  STD_CUDA_CHECK(cudaGetDevice(&device));
  if (device >= kMaxDevices) {
    int n = 0;
    STD_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    return n;
  }
  int n = counts[device].load(std::memory_order_relaxed);
  if (n == 0) {
    STD_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
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

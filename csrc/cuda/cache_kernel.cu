// CUDA kernel: the float32 cos/sin cache from float64 inv_freq. One thread per (position,
// frequency), float64 angle reduction and sin/cos from the shared math, so the CUDA and CPU caches
// agree to the last bit in nearly every entry (within one float32 ulp always).
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>

#include "checks.h"
#include "cuda/launch.h"
#include "yarn_ext/core/yarn_math.h"

namespace yarn_ext::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void build_cos_sin_cache_kernel(const double* __restrict__ frequencies, int64_t half,
                                           int64_t num_positions, double mscale,
                                           float* __restrict__ cache) {
  const int64_t total = num_positions * half;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < total;
       index += step) {
    const int64_t position = index / half;
    const int64_t i = index - position * half;
    double c, s;
    math::scaled_cos_sin(position, frequencies[i], mscale, &c, &s);
    float* row = cache + position * 2 * half;
    row[i] = static_cast<float>(c);
    row[half + i] = static_cast<float>(s);
  }
}

torch::stable::Tensor build_cos_sin_cache_cuda(torch::stable::Tensor inv_freq,
                                               int64_t num_positions, double mscale) {
  constexpr const char* kOp = "yarn_ext.build_cos_sin_cache";
  const int64_t half = detail::check_cache_request(kOp, inv_freq, num_positions, mscale);
  const torch::stable::accelerator::DeviceGuard guard(inv_freq.get_device_index());
  torch::stable::Tensor cache = torch::stable::new_empty(inv_freq, {num_positions, 2 * half},
                                                         torch::headeronly::ScalarType::Float);
  const int64_t total = num_positions * half;
  if (total == 0) return cache;
  build_cos_sin_cache_kernel<<<grid_size(total, kThreads, 16), kThreads, 0, current_stream()>>>(
      static_cast<const double*>(inv_freq.const_data_ptr()), half, num_positions, mscale,
      static_cast<float*>(cache.mutable_data_ptr()));
  STD_CUDA_KERNEL_LAUNCH_CHECK();
  return cache;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(yarn_ext, CUDA, m) {
  m.impl("build_cos_sin_cache", TORCH_BOX(&build_cos_sin_cache_cuda));
}

}  // namespace yarn_ext::cuda

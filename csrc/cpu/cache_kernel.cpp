// CPU kernel: the float32 cos/sin cache, built from float64 inv_freq with float64 angles and
// float64 cos/sin (core/yarn_math.h), on vectors (vectorized/kernels.cpp).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>

#include "checks.h"
#include "cpu/cpu_kernels.h"

namespace yarn_ext::cpu {
namespace {

using torch::stable::Tensor;

Tensor build_cos_sin_cache_cpu(Tensor inv_freq, int64_t num_positions, double mscale) {
  constexpr const char* kOp = "yarn_ext.build_cos_sin_cache";
  const int64_t half = detail::check_cache_request(kOp, inv_freq, num_positions, mscale);
  Tensor cache = torch::stable::new_empty(inv_freq, {num_positions, 2 * half},
                                          torch::headeronly::ScalarType::Float);
  const auto* frequencies = static_cast<const double*>(inv_freq.const_data_ptr());
  auto* out = static_cast<float*>(cache.mutable_data_ptr());
  const Kernels& k = kernels();
  // Each row costs `half` cos/sin pairs; split rows so every thread gets real work.
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, half));
  torch::stable::parallel_for(0, num_positions, grain, [&](int64_t begin, int64_t end) {
    k.fill_cache_rows(frequencies, half, mscale, out, begin, end);
  });
  return cache;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(yarn_ext, CPU, m) {
  m.impl("build_cos_sin_cache", TORCH_BOX(&build_cos_sin_cache_cpu));
}

}  // namespace yarn_ext::cpu

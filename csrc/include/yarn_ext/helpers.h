// The YaRN helper functions of Zeta's API, for C++ callers: header-only, over the torch-free
// definitions of helper_math.h (a bad argument throws std::invalid_argument naming it).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "yarn_ext/helper_math.h"
#include "yarn_ext/library_anchor.h"

namespace yarn_ext {

inline double find_correction_dim(double num_rotations, int64_t dim, double base = 10000,
                                  int64_t max_position_embeddings = 2048) {
  return helper_math::find_correction_dim(num_rotations, dim, base, max_position_embeddings);
}

// Zeta's correction range: whole dimensions (floor of the low bound, ceil of the high one),
// clamped to [0, dim - 1].
inline std::pair<int64_t, int64_t> find_correction_range(double low_rot, double high_rot,
                                                         int64_t dim, double base = 10000,
                                                         int64_t max_position_embeddings = 2048) {
  const auto [low, high] =
      helper_math::find_correction_range(low_rot, high_rot, dim, base, max_position_embeddings,
                                         /*truncate=*/true);
  return {static_cast<int64_t>(low), static_cast<int64_t>(high)};
}

// The same range without rounding (Python's truncate=False; transformers' gpt-oss variant).
inline std::pair<double, double> find_correction_range_fractional(
    double low_rot, double high_rot, int64_t dim, double base = 10000,
    int64_t max_position_embeddings = 2048) {
  return helper_math::find_correction_range(low_rot, high_rot, dim, base, max_position_embeddings,
                                            /*truncate=*/false);
}

// float32 tensor of shape [dim] on the CPU.
inline at::Tensor linear_ramp_mask(double min, double max, int64_t dim) {
  const std::vector<float> values = helper_math::linear_ramp_mask(min, max, dim);
  return at::tensor(values, at::TensorOptions().dtype(at::kFloat));
}

inline double get_mscale(double scale = 1.0, double mscale = 1.0) {
  return helper_math::get_mscale(scale, mscale);
}

// float64 tensor of shape [dim / 2] on the CPU: YaRN's blended inverse frequencies for a context
// extension `scale` (1 gives plain RoPE).
inline at::Tensor yarn_inv_freq(int64_t dim, double base, double scale,
                                int64_t original_max_position_embeddings,
                                double extrapolation_factor, double beta_fast, double beta_slow,
                                bool truncate) {
  const std::vector<double> values =
      helper_math::yarn_inv_freq(dim, base, scale, original_max_position_embeddings,
                                 extrapolation_factor, beta_fast, beta_slow, truncate);
  return at::tensor(values, at::TensorOptions().dtype(at::kDouble));
}

}  // namespace yarn_ext

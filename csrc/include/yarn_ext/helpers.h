// The YaRN helper functions of Zeta's API, for C++ callers. Arguments are validated (a bad one
// raises c10::ValueError naming it); the math is yarn_ext/core/yarn_math.h.
#pragma once

#include "yarn_ext/library_anchor.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

namespace yarn_ext {

double find_correction_dim(double num_rotations, int64_t dim, double base = 10000,
                           int64_t max_position_embeddings = 2048);

// Zeta's correction range: whole dimensions (floor of the low bound, ceil of the high one),
// clamped to [0, dim - 1].
std::pair<int64_t, int64_t> find_correction_range(double low_rot, double high_rot, int64_t dim,
                                                  double base = 10000,
                                                  int64_t max_position_embeddings = 2048);

// The same range without rounding (Python's truncate=False; transformers' gpt-oss variant).
std::pair<double, double> find_correction_range_fractional(double low_rot, double high_rot,
                                                           int64_t dim, double base = 10000,
                                                           int64_t max_position_embeddings = 2048);

// float32 tensor of shape [dim] on the CPU.
at::Tensor linear_ramp_mask(double min, double max, int64_t dim);

double get_mscale(double scale = 1.0, double mscale = 1.0);

// float64 tensor of shape [dim / 2] on the CPU: YaRN's blended inverse frequencies for a context
// extension `scale` (1 gives plain RoPE).
at::Tensor yarn_inv_freq(int64_t dim, double base, double scale,
                         int64_t original_max_position_embeddings, double extrapolation_factor,
                         double beta_fast, double beta_slow, bool truncate);

}  // namespace yarn_ext

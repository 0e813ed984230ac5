// The YaRN helper functions of Zeta's API and the table policy's two formulas, with their
// argument checks: torch-free and header-only, deliberately, so that one definition serves the
// Python bindings (yarn_ext._C, which has no torch in it) and the C++ API (helpers.h,
// table_policy.h, which builds the module's policy on them). A bad argument
// throws std::invalid_argument naming it (ValueError in Python). The math is core/yarn_math.h.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

#include "yarn_ext/core/yarn_math.h"

namespace yarn_ext::helper_math {

template <typename... Parts>
void require(bool ok, const char* fn, const Parts&... parts) {
  if (ok) return;
  std::ostringstream message;
  message << fn << ": ";
  (message << ... << parts);
  throw std::invalid_argument(message.str());
}

inline void check_rope_geometry(const char* fn, int64_t dim, double base,
                                int64_t max_position_embeddings, const char* length_name) {
  require(dim > 0, fn, "dim must be positive, got ", dim);
  require(std::isfinite(base) && base > 1, fn, "base must be a finite number > 1, got ", base);
  require(max_position_embeddings > 0, fn, length_name, " must be positive, got ",
          max_position_embeddings);
}

inline void check_rotations(const char* fn, const char* name, double rotations) {
  require(std::isfinite(rotations) && rotations > 0, fn, name, " must be a finite number > 0, got ",
          rotations);
}

inline double find_correction_dim(double num_rotations, int64_t dim, double base = 10000,
                                  int64_t max_position_embeddings = 2048) {
  constexpr const char* kFn = "find_correction_dim";
  check_rotations(kFn, "num_rotations", num_rotations);
  check_rope_geometry(kFn, dim, base, max_position_embeddings, "max_position_embeddings");
  return math::find_correction_dim(num_rotations, dim, base, max_position_embeddings);
}

// Zeta's correction range with truncate (whole dimensions: floor of the low bound, ceil of the
// high one, clamped to [0, dim - 1]); without, the fractional bounds (transformers' gpt-oss).
inline std::pair<double, double> find_correction_range(double low_rot, double high_rot, int64_t dim,
                                                       double base, int64_t max_position_embeddings,
                                                       bool truncate) {
  constexpr const char* kFn = "find_correction_range";
  check_rotations(kFn, "low_rot", low_rot);
  check_rotations(kFn, "high_rot", high_rot);
  check_rope_geometry(kFn, dim, base, max_position_embeddings, "max_position_embeddings");
  const math::CorrectionRange range =
      math::find_correction_range(low_rot, high_rot, dim, base, max_position_embeddings, truncate);
  return {range.low, range.high};
}

// [dim] float32 values: clamp((i - min) / (max - min), 0, 1).
inline std::vector<float> linear_ramp_mask(double min, double max, int64_t dim) {
  require(dim >= 0, "linear_ramp_mask", "dim must be >= 0, got ", dim);
  require(std::isfinite(min), "linear_ramp_mask", "min must be finite, got ", min);
  require(std::isfinite(max), "linear_ramp_mask", "max must be finite, got ", max);
  std::vector<float> ramp(static_cast<size_t>(dim));
  for (int64_t i = 0; i < dim; ++i)
    ramp[static_cast<size_t>(i)] = math::linear_ramp<float>(i, min, max);
  return ramp;
}

inline double get_mscale(double scale = 1.0, double mscale = 1.0) {
  // Any scale <= 1 (no extension) gives 1, as the formula says; only NaN/inf are rejected.
  require(std::isfinite(scale), "get_mscale", "scale must be finite, got ", scale);
  require(std::isfinite(mscale), "get_mscale", "mscale must be finite, got ", mscale);
  return math::get_mscale(scale, mscale);
}

inline void check_rotary_dim(const char* fn, int64_t dim) {
  require(dim > 0 && dim % 2 == 0, fn, "dim must be a positive even number, got ", dim);
}

// The arguments of yarn_inv_freq but the scale, checked in one place for yarn_inv_freq and for
// the module's constructor (table_policy.h's check_config), which name themselves as `fn`.
inline void check_frequency_args(const char* fn, int64_t dim, double base,
                                 int64_t original_max_position_embeddings,
                                 double extrapolation_factor, double beta_fast, double beta_slow) {
  check_rotary_dim(fn, dim);
  check_rope_geometry(fn, dim, base, original_max_position_embeddings,
                      "original_max_position_embeddings");
  require(std::isfinite(extrapolation_factor), fn, "extrapolation_factor must be finite, got ",
          extrapolation_factor);
  check_rotations(fn, "beta_fast", beta_fast);
  check_rotations(fn, "beta_slow", beta_slow);
  // beta_fast is the faster-rotating bound; equal betas are real (some models ship them) and
  // the ramp guards the zero-width case.
  require(beta_fast >= beta_slow, fn, "beta_fast (", beta_fast, ") must be >= beta_slow (",
          beta_slow, ")");
}

// [dim / 2] float64 values: YaRN's blended inverse frequencies for a context extension `scale`
// (1 gives plain RoPE).
inline std::vector<double> yarn_inv_freq(int64_t dim, double base, double scale,
                                         int64_t original_max_position_embeddings,
                                         double extrapolation_factor, double beta_fast,
                                         double beta_slow, bool truncate) {
  constexpr const char* kFn = "yarn_inv_freq";
  check_frequency_args(kFn, dim, base, original_max_position_embeddings, extrapolation_factor,
                       beta_fast, beta_slow);
  require(std::isfinite(scale) && scale > 0, kFn,
          "scale (scaling_factor) must be a finite number > 0, got ", scale);
  const math::FrequencyParams params =
      math::make_frequency_params(dim, base, scale, original_max_position_embeddings,
                                  extrapolation_factor, beta_fast, beta_slow, truncate);
  std::vector<double> inv_freq(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i)
    inv_freq[static_cast<size_t>(i)] = math::inv_freq(params, i);
  return inv_freq;
}

// -- the table formulas of YarnEmbedding's policy (table_policy.h) --

// The attention scale multiplying cos and sin: attention_factor when given; 1 for plain RoPE
// (scale absent, as in Zeta); else get_mscale(scale) * attn_factor.
inline double table_mscale(std::optional<double> scale, double attn_factor,
                           std::optional<double> attention_factor) {
  if (attention_factor.has_value()) return *attention_factor;
  if (!scale.has_value()) return 1.0;
  return get_mscale(*scale) * attn_factor;
}

// The scale a cache grown to seq_len positions uses: seq_len / original when that raises the
// current scale (dynamic YaRN, as in Zeta), else nothing - keep the frequencies and only extend
// the cache, because lowering the scale (even below 1, as Zeta would) breaks positions the model
// was trained on.
inline std::optional<double> grown_scale(int64_t seq_len, int64_t original_max_position_embeddings,
                                         double current_scale) {
  const double scale =
      static_cast<double>(seq_len) / static_cast<double>(original_max_position_embeddings);
  if (scale > current_scale) return scale;
  return std::nullopt;
}

}  // namespace yarn_ext::helper_math

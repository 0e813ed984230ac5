// The helper functions of helpers.h: argument checks around the shared math of yarn_math.h.
#include "yarn_ext/helpers.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "yarn_ext/core/yarn_math.h"

namespace yarn_ext {
namespace {

void check_rope_geometry(const char* fn, int64_t dim, double base, int64_t max_position_embeddings,
                         const char* length_name) {
  TORCH_CHECK_VALUE(dim > 0, fn, ": dim must be positive, got ", dim);
  TORCH_CHECK_VALUE(std::isfinite(base) && base > 1, fn, ": base must be a finite number > 1, got ",
                    base);
  TORCH_CHECK_VALUE(max_position_embeddings > 0, fn, ": ", length_name, " must be positive, got ",
                    max_position_embeddings);
}

void check_rotations(const char* fn, const char* name, double rotations) {
  TORCH_CHECK_VALUE(std::isfinite(rotations) && rotations > 0, fn, ": ", name,
                    " must be a finite number > 0, got ", rotations);
}

}  // namespace

double find_correction_dim(double num_rotations, int64_t dim, double base,
                           int64_t max_position_embeddings) {
  constexpr const char* kFn = "find_correction_dim";
  check_rotations(kFn, "num_rotations", num_rotations);
  check_rope_geometry(kFn, dim, base, max_position_embeddings, "max_position_embeddings");
  return math::find_correction_dim(num_rotations, dim, base, max_position_embeddings);
}

namespace {

math::CorrectionRange checked_correction_range(double low_rot, double high_rot, int64_t dim,
                                               double base, int64_t max_position_embeddings,
                                               bool truncate) {
  constexpr const char* kFn = "find_correction_range";
  check_rotations(kFn, "low_rot", low_rot);
  check_rotations(kFn, "high_rot", high_rot);
  check_rope_geometry(kFn, dim, base, max_position_embeddings, "max_position_embeddings");
  return math::find_correction_range(low_rot, high_rot, dim, base, max_position_embeddings,
                                     truncate);
}

}  // namespace

std::pair<int64_t, int64_t> find_correction_range(double low_rot, double high_rot, int64_t dim,
                                                  double base, int64_t max_position_embeddings) {
  const math::CorrectionRange range =
      checked_correction_range(low_rot, high_rot, dim, base, max_position_embeddings, true);
  // Whole numbers by construction (floor / ceil, clamped to [0, dim - 1]).
  return {static_cast<int64_t>(range.low), static_cast<int64_t>(range.high)};
}

std::pair<double, double> find_correction_range_fractional(double low_rot, double high_rot,
                                                           int64_t dim, double base,
                                                           int64_t max_position_embeddings) {
  const math::CorrectionRange range =
      checked_correction_range(low_rot, high_rot, dim, base, max_position_embeddings, false);
  return {range.low, range.high};
}

at::Tensor linear_ramp_mask(double min, double max, int64_t dim) {
  TORCH_CHECK_VALUE(dim >= 0, "linear_ramp_mask: dim must be >= 0, got ", dim);
  TORCH_CHECK_VALUE(std::isfinite(min), "linear_ramp_mask: min must be finite, got ", min);
  TORCH_CHECK_VALUE(std::isfinite(max), "linear_ramp_mask: max must be finite, got ", max);
  at::Tensor ramp = at::empty({dim}, at::TensorOptions().dtype(at::kFloat));
  float* out = ramp.mutable_data_ptr<float>();
  for (int64_t i = 0; i < dim; ++i) out[i] = math::linear_ramp<float>(i, min, max);
  return ramp;
}

double get_mscale(double scale, double mscale) {
  // Any scale <= 1 (no extension) gives 1, as the formula says; only NaN/inf are rejected.
  TORCH_CHECK_VALUE(std::isfinite(scale), "get_mscale: scale must be finite, got ", scale);
  TORCH_CHECK_VALUE(std::isfinite(mscale), "get_mscale: mscale must be finite, got ", mscale);
  return math::get_mscale(scale, mscale);
}

at::Tensor yarn_inv_freq(int64_t dim, double base, double scale,
                         int64_t original_max_position_embeddings, double extrapolation_factor,
                         double beta_fast, double beta_slow, bool truncate) {
  constexpr const char* kFn = "yarn_inv_freq";
  TORCH_CHECK_VALUE(dim > 0 && dim % 2 == 0, kFn, ": dim must be a positive even number, got ",
                    dim);
  check_rope_geometry(kFn, dim, base, original_max_position_embeddings,
                      "original_max_position_embeddings");
  TORCH_CHECK_VALUE(std::isfinite(scale) && scale > 0, kFn,
                    ": scale (scaling_factor) must be a finite number > 0, got ", scale);
  TORCH_CHECK_VALUE(std::isfinite(extrapolation_factor), kFn,
                    ": extrapolation_factor must be finite, got ", extrapolation_factor);
  check_rotations(kFn, "beta_fast", beta_fast);
  check_rotations(kFn, "beta_slow", beta_slow);
  // beta_fast is the faster-rotating bound; equal betas are real (some models ship them) and
  // the ramp guards the zero-width case.
  TORCH_CHECK_VALUE(beta_fast >= beta_slow, kFn, ": beta_fast (", beta_fast,
                    ") must be >= beta_slow (", beta_slow, ")");
  const math::FrequencyParams params =
      math::make_frequency_params(dim, base, scale, original_max_position_embeddings,
                                  extrapolation_factor, beta_fast, beta_slow, truncate);
  const int64_t half = dim / 2;
  at::Tensor inv_freq = at::empty({half}, at::TensorOptions().dtype(at::kDouble));
  double* out = inv_freq.mutable_data_ptr<double>();
  for (int64_t i = 0; i < half; ++i) out[i] = math::inv_freq(params, i);
  return inv_freq;
}

}  // namespace yarn_ext

// The YaRN formulas, written once. Torch-free and host+device: the helper bindings, the cache
// kernels and the on-the-fly path of the rotation kernels all call these functions.
//
// The helper formulas keep Python's operation order so that they are bit-identical to Zeta's
// float64 Python code; see docs in ../shared/docs/yarn.md (and the README) for the math.
#pragma once

#include <math.h>
#include <stdint.h>

#include "yarn_ext/core/macros.h"

namespace yarn_ext::math {

constexpr double kPi = 3.14159265358979323846;
// 2*pi split in two doubles (Cody-Waite): the reduction below subtracts k * 2*pi with an error
// far below one ulp of the reduced angle, even for angles of 1e6 radians and more.
constexpr double kTwoPiHi = 6.283185307179586;
constexpr double kTwoPiLo = 2.4492935982947064e-16;
constexpr double kInvTwoPi = 0.15915494309189535;

// The dimension index at which a frequency completes `num_rotations` turns over
// `max_position_embeddings` positions.
YARN_HOST_DEVICE inline double find_correction_dim(double num_rotations, int64_t dim, double base,
                                                   int64_t max_position_embeddings) {
  return (static_cast<double>(dim) *
          log(static_cast<double>(max_position_embeddings) / (num_rotations * 2 * kPi))) /
         (2 * log(base));
}

struct CorrectionRange {
  double low;
  double high;
};

// With truncate (Zeta, most models) the range is widened to whole dimensions; without it
// (transformers' gpt-oss variant) the fractional bounds are kept. Both are clamped to [0, dim-1].
YARN_HOST_DEVICE inline CorrectionRange find_correction_range(double low_rot, double high_rot,
                                                              int64_t dim, double base,
                                                              int64_t max_position_embeddings,
                                                              bool truncate) {
  double low = find_correction_dim(low_rot, dim, base, max_position_embeddings);
  double high = find_correction_dim(high_rot, dim, base, max_position_embeddings);
  if (truncate) {
    low = floor(low);
    high = ceil(high);
  }
  return {low < 0 ? 0.0 : low,
          high > static_cast<double>(dim - 1) ? static_cast<double>(dim - 1) : high};
}

// Element i of Zeta's linear_ramp_mask. T = float reproduces Zeta's float32 tensor arithmetic
// exactly (each operand rounded to float32 first); T = double is what inv_freq uses.
template <typename T>
YARN_HOST_DEVICE inline T linear_ramp(int64_t i, double min, double max) {
  if (min == max) max += 0.001;  // Zeta's guard: a zero-width ramp would divide by zero.
  const T value = (static_cast<T>(i) - static_cast<T>(min)) / static_cast<T>(max - min);
  return value < T(0) ? T(0) : (value > T(1) ? T(1) : value);
}

// Attention scale for a context extension `scale`; `mscale` is DeepSeek's coefficient.
YARN_HOST_DEVICE inline double get_mscale(double scale, double mscale) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

// Everything inv_freq depends on, reduced to what each frequency needs.
struct FrequencyParams {
  int64_t dim;  // rotary dimension (even); there are dim / 2 frequencies
  double base;
  double scale;  // context extension factor s; 1 gives plain RoPE
  double ramp_low;
  double ramp_high;
  double extrapolation_factor;
};

YARN_HOST_DEVICE inline FrequencyParams make_frequency_params(
    int64_t dim, double base, double scale, int64_t original_max_position_embeddings,
    double extrapolation_factor, double beta_fast, double beta_slow, bool truncate) {
  const CorrectionRange range = find_correction_range(beta_fast, beta_slow, dim, base,
                                                      original_max_position_embeddings, truncate);
  return {dim, base, scale, range.low, range.high, extrapolation_factor};
}

// Frequency i: a blend of the original (extrapolated) and the scaled (interpolated) frequency;
// the ramp keeps fast-rotating dimensions original and slow ones interpolated.
YARN_HOST_DEVICE inline double inv_freq(const FrequencyParams& p, int64_t i) {
  const double extrapolation =
      1.0 / pow(p.base, static_cast<double>(2 * i) / static_cast<double>(p.dim));
  const double interpolation = extrapolation / p.scale;
  const double mask =
      (1.0 - linear_ramp<double>(i, p.ramp_low, p.ramp_high)) * p.extrapolation_factor;
  // Both terms are non-negative for mask in [0, 1], so this form has no cancellation (a lerp
  // written as extrapolation + (interpolation - extrapolation) * (1 - mask) loses ~log2(scale)
  // bits where the ramp is partial).
  return interpolation * (1.0 - mask) + extrapolation * mask;
}

// position * inv_freq formed in float64 and reduced to about [-pi, pi]. A float32 angle is off by
// half an ulp of the angle (1e-2 rad at 128K positions); this is off by ~1e-16 * |angle|.
YARN_HOST_DEVICE inline double reduced_angle(int64_t position, double frequency) {
  const double angle = static_cast<double>(position) * frequency;
  const double turns = rint(angle * kInvTwoPi);
  return fma(-turns, kTwoPiLo, fma(-turns, kTwoPiHi, angle));
}

// cos and sin of one (position, frequency), multiplied by the attention scale, in float64.
YARN_HOST_DEVICE inline void scaled_cos_sin(int64_t position, double frequency,
                                            double attention_scale, double* cos_out,
                                            double* sin_out) {
  const double angle = reduced_angle(position, frequency);
  *cos_out = cos(angle) * attention_scale;
  *sin_out = sin(angle) * attention_scale;
}

// One row of the cos/sin table: cos for each frequency in cos_row[0, half), sin in sin_row.
// The cache kernels write rows of the cache with it; the rotation kernels use it for positions
// outside the cache, so both paths produce the same values bit for bit.
template <typename T>
YARN_HOST_DEVICE inline void fill_cos_sin_row(int64_t position, const double* frequencies,
                                              int64_t half, double attention_scale, T* cos_row,
                                              T* sin_row) {
  for (int64_t i = 0; i < half; ++i) {
    double c, s;
    scaled_cos_sin(position, frequencies[i], attention_scale, &c, &s);
    cos_row[i] = static_cast<T>(c);
    sin_row[i] = static_cast<T>(s);
  }
}

}  // namespace yarn_ext::math

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
YARN_ISA_NAMESPACE_BEGIN

constexpr double kPi = 3.14159265358979323846;

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

// Arithmetic of the cos/sin formula below, for double here (host and device) and for the CPU's
// vector of doubles (csrc/cpu/vectorized/arith.h). Every multiply-add is a fused one, so that the
// scalar, vector and CUDA evaluations give the same bits.
template <typename T>
struct Arith;

template <>
struct Arith<double> {
  YARN_HOST_DEVICE static double fma(double a, double b, double c) { return ::fma(a, b, c); }
  YARN_HOST_DEVICE static double fnma(double a, double b, double c) { return ::fma(-a, b, c); }
  YARN_HOST_DEVICE static double round(double x) { return rint(x); }  // to nearest, ties to even
  YARN_HOST_DEVICE static double abs(double x) { return fabs(x); }
};

// pi split in two doubles (Cody-Waite): angle - k * pi is formed with an error far below one ulp
// of the result, even for angles of 1e6 radians (position 2^20) and more.
constexpr double kPiHi = 3.141592653589793;
constexpr double kPiLo = 1.2246467991473532e-16;
constexpr double kInvPi = 0.3183098861837907;

template <typename T>
struct CosSin {
  T cos;
  T sin;
};

// cos(angle) * scale and sin(angle) * scale in float64, for T = double or a vector of doubles.
// angle = k * pi + r with |r| <= pi/2, so cos(angle) = (-1)^k cos(r) and likewise sin; on
// [-pi/2, pi/2] the Taylor series to r^21 (sin) and r^22 (cos) are within 1.2e-18 of the true
// values, so what is left is the rounding of a few float64 operations (about 1e-16): far below
// the float32 cache's half ulp, and float64-accurate for float64 inputs. Written with
// multiply-adds only (no libm), so that CPU vectors can evaluate it as well.
template <typename T>
YARN_HOST_DEVICE inline CosSin<T> cos_sin_of_angle(T angle, T scale) {
  using A = Arith<T>;
  const T turns = A::round(angle * T(kInvPi));
  const T r = A::fnma(turns, T(kPiLo), A::fnma(turns, T(kPiHi), angle));
  const T r2 = r * r;
  // sin(r) = r + r^3 * (-1/3! + r^2/5! - ... + r^18/21!)
  T s = T(1.0 / 51090942171709440000.0);
  s = A::fma(s, r2, T(-1.0 / 121645100408832000.0));
  s = A::fma(s, r2, T(1.0 / 355687428096000.0));
  s = A::fma(s, r2, T(-1.0 / 1307674368000.0));
  s = A::fma(s, r2, T(1.0 / 6227020800.0));
  s = A::fma(s, r2, T(-1.0 / 39916800.0));
  s = A::fma(s, r2, T(1.0 / 362880.0));
  s = A::fma(s, r2, T(-1.0 / 5040.0));
  s = A::fma(s, r2, T(1.0 / 120.0));
  s = A::fma(s, r2, T(-1.0 / 6.0));
  s = A::fma(r * r2, s, r);
  // cos(r) = 1 + r^2 * (-1/2! + r^2/4! - ... + r^20/22!)
  T c = T(-1.0 / 1124000727777607680000.0);
  c = A::fma(c, r2, T(1.0 / 2432902008176640000.0));
  c = A::fma(c, r2, T(-1.0 / 6402373705728000.0));
  c = A::fma(c, r2, T(1.0 / 20922789888000.0));
  c = A::fma(c, r2, T(-1.0 / 87178291200.0));
  c = A::fma(c, r2, T(1.0 / 479001600.0));
  c = A::fma(c, r2, T(-1.0 / 3628800.0));
  c = A::fma(c, r2, T(1.0 / 40320.0));
  c = A::fma(c, r2, T(-1.0 / 720.0));
  c = A::fma(c, r2, T(1.0 / 24.0));
  c = A::fma(c, r2, T(-1.0 / 2.0));
  c = A::fma(r2, c, T(1.0));
  // (-1)^k from k's parity: k - 2 * round(k / 2) is -1, 0 or 1, exactly.
  const T parity = A::abs(A::fnma(T(2.0), A::round(turns * T(0.5)), turns));
  const T signed_scale = A::fnma(T(2.0), parity, T(1.0)) * scale;
  return {c * signed_scale, s * signed_scale};
}

// cos and sin of one (position, frequency), multiplied by the attention scale, in float64.
YARN_HOST_DEVICE inline void scaled_cos_sin(int64_t position, double frequency,
                                            double attention_scale, double* cos_out,
                                            double* sin_out) {
  const CosSin<double> cs =
      cos_sin_of_angle(static_cast<double>(position) * frequency, attention_scale);
  *cos_out = cs.cos;
  *sin_out = cs.sin;
}

YARN_ISA_NAMESPACE_END
}  // namespace yarn_ext::math

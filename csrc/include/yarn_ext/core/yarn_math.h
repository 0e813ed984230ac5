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
  using Mask = bool;
  YARN_HOST_DEVICE static double fma(double a, double b, double c) { return ::fma(a, b, c); }
  YARN_HOST_DEVICE static double fnma(double a, double b, double c) { return ::fma(-a, b, c); }
  // A product rounded on its own: nvcc contracts a * b + c into an fma by default, which would
  // break the exact products and sums of the far reduction below.
  YARN_HOST_DEVICE static double mul(double a, double b) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
  }
  YARN_HOST_DEVICE static double round(double x) { return rint(x); }  // to nearest, ties to even
  YARN_HOST_DEVICE static double abs(double x) { return fabs(x); }
  YARN_HOST_DEVICE static Mask above(double x, double limit) { return x > limit; }
  YARN_HOST_DEVICE static bool any(Mask m) { return m; }
  YARN_HOST_DEVICE static double select(Mask m, double a, double b) { return m ? a : b; }
};

// pi as an unevaluated sum of three doubles, kPiHi + kPiLo + kPiTail (each the double nearest
// to what the ones before leave), 1e-49 from pi: kPiHi + kPiLo alone reduces angles up to
// kFarAngle with an error far below one ulp of the result; kPiTail serves the larger ones.
constexpr double kPiHi = 3.141592653589793;
constexpr double kPiLo = 1.2246467991473532e-16;
constexpr double kPiTail = -2.9947698097183397e-33;
constexpr double kInvPi = 0.3183098861837907;
// Up to 2^44 radians, angle / pi is formed to within 1.3e-3, so round() finds the nearest
// multiple or, next to a tie, its neighbour: the remainder stays within pi/2 + 4e-3, where the
// series below are accurate. Past it (positions beyond ~2^44: padding sentinels, int64's
// extremes) the quotient is off by up to 2^-52 of itself, and the remainder needs a second pass.
constexpr double kFarAngle = 17592186044416.0;  // 2^44

template <typename T>
struct CosSin {
  T cos;
  T sin;
};

// angle = k * pi + r: the remainder r, |r| <= pi/2 (+4e-3), and (-1)^k.
template <typename T>
struct Reduced {
  T r;
  T sign;
};

// (-1)^k for an integer-valued k: k - 2 * round(k / 2) is -1, 0 or 1, exactly, for every k
// (past 2^53 every double is even).
template <typename T>
YARN_HOST_DEVICE inline T sign_of_turns(T turns) {
  using A = Arith<T>;
  const T parity = A::abs(A::fnma(T(2.0), A::round(turns * T(0.5)), turns));
  return A::fnma(T(2.0), parity, T(1.0));
}

// Cody-Waite with pi in two parts: exact enough for |angle| <= kFarAngle.
template <typename T>
YARN_HOST_DEVICE inline Reduced<T> reduce_near(T angle) {
  using A = Arith<T>;
  const T turns = A::round(angle * T(kInvPi));
  const T r = A::fnma(turns, T(kPiLo), A::fnma(turns, T(kPiHi), angle));
  return {r, sign_of_turns(turns)};
}

// a + b = sum + error exactly (Knuth's two-sum; adds only, so nothing can be fused).
template <typename T>
struct TwoSum {
  T sum;
  T error;
};
template <typename T>
YARN_HOST_DEVICE inline TwoSum<T> two_sum(T a, T b) {
  const T sum = a + b;
  const T b_part = sum - a;
  const T a_part = sum - b_part;
  return {sum, (a - a_part) + (b - b_part)};
}

// For |angle| > kFarAngle: turns = round(angle / pi) may be off by up to 2^-52 of itself (a
// few thousand at 2^64), so first angle - turns * pi is formed as an unevaluated sum hi + lo
// with pi in three parts - the products split exactly by fma, angle - turns * kPiHi exact by
// Sterbenz's lemma, the sums by two_sum - and then hi + lo is reduced again as a near angle.
// The remainder is within 2^-52 (absolute) of the true remainder of the float64 angle for
// |angle| up to about 2^100; YaRN's frequencies are at most about 1 (unless extrapolation_factor
// is huge), so an int64 position times one stays below 2^64.
template <typename T>
YARN_HOST_DEVICE inline Reduced<T> reduce_far(T angle) {
  using A = Arith<T>;
  const T turns = A::round(angle * T(kInvPi));
  const T hi_product = A::mul(turns, T(kPiHi));
  const T hi_error = A::fnma(turns, T(kPiHi), hi_product);  // hi_product - turns * kPiHi
  const T lo_product = A::mul(turns, T(kPiLo));
  const T lo_error = A::fnma(turns, T(kPiLo), lo_product);  // lo_product - turns * kPiLo
  // angle - turns * pi = (angle - hi_product) + hi_error - lo_product + lo_error - turns * tail
  const TwoSum<T> first = two_sum(angle - hi_product, hi_error);
  const TwoSum<T> second = two_sum(first.sum, T(0.0) - lo_product);
  const T lo = A::fnma(turns, T(kPiTail), (first.error + second.error) + lo_error);
  const T hi = second.sum;
  const T more_turns = A::round(hi * T(kInvPi));
  const T r = A::fnma(more_turns, T(kPiLo), A::fnma(more_turns, T(kPiHi), hi) + lo);
  return {r, sign_of_turns(turns) * sign_of_turns(more_turns)};
}

// cos(angle) * scale and sin(angle) * scale in float64, for T = double or a vector of doubles.
// angle = k * pi + r with |r| <= pi/2 (+4e-3), so cos(angle) = (-1)^k cos(r) and likewise sin;
// on [-pi/2, pi/2] the Taylor series to r^21 (sin) and r^22 (cos) are within 1.2e-18 of the true
// values, so what is left is the rounding of a few float64 operations (about 1e-16): far below
// the float32 cache's half ulp, and float64-accurate for float64 inputs. Written with
// multiply-adds only (no libm), so that CPU vectors can evaluate it as well. Only angles past
// kFarAngle (lanes of them, on a vector) take the longer reduction; the others give the same
// bits whichever path their neighbours take.
template <typename T>
YARN_HOST_DEVICE inline CosSin<T> cos_sin_of_angle(T angle, T scale) {
  using A = Arith<T>;
  Reduced<T> reduced = reduce_near(angle);
  const typename A::Mask far = A::above(A::abs(angle), kFarAngle);
  if (A::any(far)) {
    const Reduced<T> far_reduced = reduce_far(angle);
    reduced = {A::select(far, far_reduced.r, reduced.r),
               A::select(far, far_reduced.sign, reduced.sign)};
  }
  const T r = reduced.r;
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
  const T signed_scale = reduced.sign * scale;
  return {c * signed_scale, s * signed_scale};
}

// cos and sin of one (position, frequency), multiplied by the attention scale, in float64.
YARN_HOST_DEVICE inline void scaled_cos_sin(int64_t position, double frequency,
                                            double attention_scale, double* cos_out,
                                            double* sin_out) {
  // The angle rounded on its own (Arith::mul): were nvcc to fuse it into the far reduction's
  // angle - turns * kPiHi, the exact product would be reduced instead of the float64 angle.
  const double angle = Arith<double>::mul(static_cast<double>(position), frequency);
  const CosSin<double> cs = cos_sin_of_angle(angle, attention_scale);
  *cos_out = cs.cos;
  *sin_out = cs.sin;
}

YARN_ISA_NAMESPACE_END
}  // namespace yarn_ext::math

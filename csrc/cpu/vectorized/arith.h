// math::Arith for ATen's vector of doubles, so that the shared cos/sin formula
// (core/yarn_math.h) runs on CPU vectors with the same operations - and the same bits - as the
// scalar and CUDA evaluations. Included only by the per-instruction-set kernels.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cmath>

#include "yarn_ext/core/yarn_math.h"

namespace yarn_ext::math {
YARN_ISA_NAMESPACE_BEGIN

template <>
struct Arith<at::vec::Vectorized<double>> {
  using Vec = at::vec::Vectorized<double>;
  using Mask = Vec;  // all bits set in a lane where the condition holds, as ATen compares

  // ATen's AVX2/AVX512 fmadd is one fused instruction; its generic fallback rounds twice, so
  // other builds fuse lane by lane.
  static Vec fma(const Vec& a, const Vec& b, const Vec& c) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
    return at::vec::fmadd(a, b, c);
#else
    return lanes(a, b, c, [](double x, double y, double z) { return std::fma(x, y, z); });
#endif
  }
  static Vec fnma(const Vec& a, const Vec& b, const Vec& c) {  // c - a * b, fused
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
    return at::vec::fnmadd(a, b, c);
#else
    return lanes(a, b, c, [](double x, double y, double z) { return std::fma(-x, y, z); });
#endif
  }
  static Vec mul(const Vec& a, const Vec& b) { return a * b; }  // (-ffp-contract=off)
  static Vec round(const Vec& x) { return x.round(); }          // to nearest, ties to even
  static Vec abs(const Vec& x) { return x.abs(); }
  static Mask above(const Vec& x, double limit) { return x > Vec(limit); }
  // zero_mask has a bit for each lane that compares equal to 0.0; a set lane (all bits, a NaN)
  // never does.
  static bool any(const Mask& m) { return m.zero_mask() != (1 << Vec::size()) - 1; }
  static Vec select(const Mask& m, const Vec& a, const Vec& b) { return Vec::blendv(b, a, m); }

 private:
  template <typename F>
  [[maybe_unused]] static Vec lanes(const Vec& a, const Vec& b, const Vec& c, F f) {
    double x[Vec::size()], y[Vec::size()], z[Vec::size()];
    a.store(x);
    b.store(y);
    c.store(z);
    for (int j = 0; j < Vec::size(); ++j) x[j] = f(x[j], y[j], z[j]);
    return Vec::loadu(x);
  }
};

YARN_ISA_NAMESPACE_END
}  // namespace yarn_ext::math

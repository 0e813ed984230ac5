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
  static Vec round(const Vec& x) { return x.round(); }  // to nearest, ties to even
  static Vec abs(const Vec& x) { return x.abs(); }

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

// One row of cos/sin values, vectorized: the cache kernel writes the cache with it, and the
// rotation uses it for positions outside the cache (and for float64 inputs), so both paths give
// the same values bit for bit - and the same as the CUDA kernels' scalar evaluation.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cstdint>

#include "cpu/vectorized/arith.h"
#include "yarn_ext/core/yarn_math.h"

namespace yarn_ext::cpu {
namespace CPU_CAPABILITY {

// cos(position * f_i) * mscale into cos_row[i] and the sin into sin_row[i], i < half, in float64
// and rounded once to out_t (float for the cache, double for float64 rotation).
template <typename out_t>
void fill_cos_sin_row(int64_t position, const double* frequencies, int64_t half, double mscale,
                      out_t* cos_row, out_t* sin_row) {
  using Vec = at::vec::Vectorized<double>;
  constexpr int64_t kLanes = Vec::size();
  const Vec pos(static_cast<double>(position));
  const Vec scale(mscale);
  int64_t i = 0;
  for (; i + kLanes <= half; i += kLanes) {
    const math::CosSin<Vec> cs = math::cos_sin_of_angle(pos * Vec::loadu(frequencies + i), scale);
    if constexpr (std::is_same_v<out_t, double>) {
      cs.cos.store(cos_row + i);
      cs.sin.store(sin_row + i);
    } else {
      double c[kLanes], s[kLanes];
      cs.cos.store(c);
      cs.sin.store(s);
      for (int64_t j = 0; j < kLanes; ++j) {
        cos_row[i + j] = static_cast<out_t>(c[j]);
        sin_row[i + j] = static_cast<out_t>(s[j]);
      }
    }
  }
  for (; i < half; ++i) {  // the same formula, one lane at a time
    const math::CosSin<double> cs =
        math::cos_sin_of_angle(static_cast<double>(position) * frequencies[i], mscale);
    cos_row[i] = static_cast<out_t>(cs.cos);
    sin_row[i] = static_cast<out_t>(cs.sin);
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace yarn_ext::cpu

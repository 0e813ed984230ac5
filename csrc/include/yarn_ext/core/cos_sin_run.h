// The cos/sin of a run of kVec consecutive pairs at one position, as the CUDA rotations (and
// their CPU emulation) read them: from the float32 cache when the position is inside it, else
// from the float64 math. Torch-free and host+device.
#pragma once

#include <stdint.h>

#include <type_traits>

#include "yarn_ext/core/macros.h"
#include "yarn_ext/core/mrope.h"
#include "yarn_ext/core/rotation.h"
#include "yarn_ext/core/yarn_math.h"

namespace yarn_ext {

// float32 arithmetic for float32/float16/bfloat16, float64 for float64.
template <typename scalar_t>
using rotate_acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// The tables a rotation launch reads.
struct CosSinTables {
  const float* cache;  // [cache_positions, 2 * half]: mscale * cos, then mscale * sin
  int64_t cache_positions;
  const double* frequencies;  // [half], float64
  int64_t half;
  double mscale;
  bool inverse;       // rotate by -angle (sin negated): the transpose, used by the backward
  MropeLayout mrope;  // which position each pair turns with (enabled: false for plain RoPE)
};

// The position at element `offset` of an int32 or int64 positions tensor; without one
// (implicit positions) the offset itself, which the row layout makes the index along dim -2.
YARN_HOST_DEVICE inline int64_t position_at(const void* positions, bool int32_positions,
                                            int64_t offset) {
  if (positions == nullptr) return offset;
  return int32_positions ? static_cast<const int32_t*>(positions)[offset]
                         : static_cast<const int64_t*>(positions)[offset];
}

template <typename acc_t, int kVec>
struct CosSinRun {
  acc_t cos[kVec];
  acc_t sin[kVec];
};

// cos/sin of pairs [0, kVec) of `frequencies` at `position`, from the float64 math. Out of line
// on the GPU: kVec evaluations of about a thousand instructions each, which only positions
// outside the cache (and float64 inputs) need; inlined, they would spill the hot loop's
// registers. Returned by value, so that the caller's registers take it (no local memory).
template <typename acc_t, int kVec>
YARN_DEVICE_NOINLINE YARN_HOST_DEVICE CosSinRun<acc_t, kVec> computed_cos_sin(
    int64_t position, const double* frequencies, double mscale) {
  CosSinRun<acc_t, kVec> run;
  YARN_UNROLL
  for (int j = 0; j < kVec; ++j) {
    double c, s;
    math::scaled_cos_sin(position, frequencies[j], mscale, &c, &s);
    run.cos[j] = static_cast<acc_t>(c);
    run.sin[j] = static_cast<acc_t>(s);
  }
  return run;
}

// Whether `position` has a cache row (the cache holds float32: float64 inputs never read it).
template <typename acc_t>
YARN_HOST_DEVICE inline bool cached(const CosSinTables& tables, int64_t position) {
  // One unsigned comparison: a negative position becomes a huge one.
  return std::is_same_v<acc_t, float> &&
         static_cast<uint64_t>(position) < static_cast<uint64_t>(tables.cache_positions);
}

// cos/sin of pairs [first, first + kVec) from the cache row of `position` (cached<float>).
template <int kVec>
YARN_HOST_DEVICE inline CosSinRun<float, kVec> cache_cos_sin(const CosSinTables& tables,
                                                             int64_t position, int64_t first) {
  CosSinRun<float, kVec> run;
  const float* row = tables.cache + position * 2 * tables.half + first;
  rotation::load<kVec>(row, run.cos);
  rotation::load<kVec>(row + tables.half, run.sin);
  return run;
}

// cos/sin of pairs [first, first + kVec) at `position`, without the inverse's sign: from the
// cache where it has the row, else from the float64 math. A computed value is the cache's value
// to the bit (the cache is built from the same math), so which source serves never shows.
template <typename acc_t, int kVec>
YARN_HOST_DEVICE inline CosSinRun<acc_t, kVec> forward_cos_sin(const CosSinTables& tables,
                                                               int64_t position, int64_t first) {
  if constexpr (std::is_same_v<acc_t, float>) {
    if (cached<acc_t>(tables, position)) return cache_cos_sin<kVec>(tables, position, first);
  }
  return computed_cos_sin<acc_t, kVec>(position, tables.frequencies + first, tables.mscale);
}

// The position of the component of pair j of an item whose component bits are `h` and `w`:
// three scalars picked by predicates (an array indexed at run time would live in local memory
// on the GPU).
YARN_HOST_DEVICE inline int64_t component_position(uint64_t h, uint64_t w, int j, int64_t t_pos,
                                                   int64_t h_pos, int64_t w_pos) {
  return ((h >> j) & 1) ? h_pos : (((w >> j) & 1) ? w_pos : t_pos);
}

// MRoPE pairs [first, first + kVec) one at a time, from the cache or the float64 math: for
// tokens with a position outside the cache (and float64 inputs), rare as such positions are.
template <typename acc_t, int kVec>
YARN_DEVICE_NOINLINE YARN_HOST_DEVICE CosSinRun<acc_t, kVec> mrope_cos_sin_by_pair(
    const CosSinTables& tables, int64_t t, int64_t h, int64_t w, int64_t first) {
  const uint64_t h_bits = mrope_bits(tables.mrope.h_pairs, first);
  const uint64_t w_bits = mrope_bits(tables.mrope.w_pairs, first);
  CosSinRun<acc_t, kVec> run;
  YARN_UNROLL
  for (int j = 0; j < kVec; ++j) {
    const int64_t position = component_position(h_bits, w_bits, j, t, h, w);
    const CosSinRun<acc_t, 1> one = forward_cos_sin<acc_t, 1>(tables, position, first + j);
    run.cos[j] = one.cos[0];
    run.sin[j] = one.sin[0];
  }
  return run;
}

// cos/sin of pairs [first, first + kVec) of an MRoPE token whose t, h and w positions differ
// (an image or video token): pair first + j turns with the position of its component. With the
// three rows in the cache, the item's run of each (vector loads, cached across the heads) and a
// pick per pair; else pair by pair. Out of line on the GPU, as the float64 math is: a text token
// (equal positions) never runs it, and inlined it would weigh on the setup of every thread of
// the token path (benchmarks/sass.py counts it apart, as "mrope").
template <typename acc_t, int kVec>
YARN_DEVICE_NOINLINE YARN_HOST_DEVICE CosSinRun<acc_t, kVec> mrope_pairs_cos_sin(
    const CosSinTables& tables, int64_t t, int64_t h, int64_t w, int64_t first) {
  if constexpr (std::is_same_v<acc_t, float>) {
    if (cached<acc_t>(tables, t) && cached<acc_t>(tables, h) && cached<acc_t>(tables, w)) {
      const uint64_t h_bits = mrope_bits(tables.mrope.h_pairs, first);
      const uint64_t w_bits = mrope_bits(tables.mrope.w_pairs, first);
      const CosSinRun<float, kVec> at_t = cache_cos_sin<kVec>(tables, t, first);
      const CosSinRun<float, kVec> at_h = cache_cos_sin<kVec>(tables, h, first);
      const CosSinRun<float, kVec> at_w = cache_cos_sin<kVec>(tables, w, first);
      CosSinRun<acc_t, kVec> run;
      YARN_UNROLL
      for (int j = 0; j < kVec; ++j) {
        const bool use_h = (h_bits >> j) & 1, use_w = (w_bits >> j) & 1;
        run.cos[j] = use_h ? at_h.cos[j] : (use_w ? at_w.cos[j] : at_t.cos[j]);
        run.sin[j] = use_h ? at_h.sin[j] : (use_w ? at_w.sin[j] : at_t.sin[j]);
      }
      return run;
    }
  }
  return mrope_cos_sin_by_pair<acc_t, kVec>(tables, t, h, w, first);
}

// The same for any MRoPE token: a text token (three equal positions) reads as plain RoPE does -
// the same bits, and the same loads.
template <typename acc_t, int kVec>
YARN_HOST_DEVICE inline CosSinRun<acc_t, kVec> forward_mrope_cos_sin(const CosSinTables& tables,
                                                                     int64_t t, int64_t h,
                                                                     int64_t w, int64_t first) {
  if (t == h && t == w) return forward_cos_sin<acc_t, kVec>(tables, t, first);
  return mrope_pairs_cos_sin<acc_t, kVec>(tables, t, h, w, first);
}

// cos/sin of pairs [first, first + kVec) of the token whose position is at element `offset` of
// `positions` (its h and w positions follow at the MRoPE component stride), sin negated for the
// inverse rotation (exact, so the inverse is the forward's transpose to the bit).
template <typename acc_t, int kVec>
YARN_HOST_DEVICE inline CosSinRun<acc_t, kVec> load_cos_sin(const CosSinTables& tables,
                                                            const void* positions,
                                                            bool int32_positions, int64_t offset,
                                                            int64_t first) {
  const int64_t t = position_at(positions, int32_positions, offset);
  CosSinRun<acc_t, kVec> run;
  if (tables.mrope.enabled) {
    const int64_t stride = tables.mrope.component_stride;
    const int64_t h = position_at(positions, int32_positions, offset + stride);
    const int64_t w = position_at(positions, int32_positions, offset + 2 * stride);
    run = forward_mrope_cos_sin<acc_t, kVec>(tables, t, h, w, first);
  } else {
    run = forward_cos_sin<acc_t, kVec>(tables, t, first);
  }
  if (tables.inverse) {
    YARN_UNROLL
    for (int j = 0; j < kVec; ++j) run.sin[j] = -run.sin[j];
  }
  return run;
}

}  // namespace yarn_ext

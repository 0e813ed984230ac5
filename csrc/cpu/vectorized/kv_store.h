// rotate_store_kv's loop for one instruction set (included by kernels.cpp): per token, each
// head of q and k normalized (RMSNorm, when weights are given) and rotated - q back in place, k
// into the paged cache at the token's slot (and back into k when asked) - and v copied there,
// both quantized for a float8 cache. A token's cos/sin row is found once for all its heads, as
// in the rotation (block_tables.h), and the rotation is rotate_row itself: the rotated values
// are rotate_inplace's, bit for bit.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Float8_e4m3fn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cpu/cpu_kernels.h"
#include "cpu/vectorized/block_tables.h"
#include "cpu/vectorized/rotate_row.h"

namespace yarn_ext::cpu {
namespace CPU_CAPABILITY {

// A lambda that must inline into its loop (GCC otherwise may call it, returning its vectors
// through memory).
#define YARN_ALWAYS_INLINE_LAMBDA __attribute__((always_inline))

// Values rounded to scalar_t and widened back, in registers (the rounding a model's
// `.to(input_dtype)` makes between two float32 steps). bfloat16 by bit operations where the
// instruction set has them (rotate_row.h); a NaN may come back with another payload, which the
// final store (Lanes::store) makes the same on every copy.
template <typename scalar_t, typename Vec>
YARN_ALWAYS_INLINE std::pair<Vec, Vec> rounded(const Vec& lo, const Vec& hi) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return {lo, hi};
  } else {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
      return {at::vec::cast<float>(round_to_bf16_bits<true>(lo)),
              at::vec::cast<float>(round_to_bf16_bits<true>(hi))};
    }
#endif
    const auto [a, b] =
        at::vec::convert_to_float<scalar_t>(at::vec::convert_from_float<scalar_t>(lo, hi));
    return {a, b};
  }
}

// The sum of squares of n values in float32, in one order on every instruction-set copy and on
// the GPU (csrc/kv_store_work.h), so that all of them normalize to the same bits: kNormSums
// running sums, value i added to sum i % kNormSums in index order, then the sums added pairwise
// (sum 2j + sum 2j + 1, halving). (A unit's tail loads zeros, which change no sum.)
constexpr int kNormSums = 32;

// The kNormSums sums, as stored in lanes[m] for sum m, folded.
inline float fold_sums(float* lanes) {
  for (int width = kNormSums / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] = lanes[2 * j] + lanes[2 * j + 1];
  }
  return lanes[0];
}

template <typename scalar_t>
float sum_of_squares(const scalar_t* in, int64_t n) {
  using L = Lanes<scalar_t>;
  using Vec = typename L::Vec;
  constexpr int64_t kWidth = L::kWidth;  // values a load: 2 vectors, in index order
  static_assert(kNormSums % kWidth == 0);
  constexpr int kLoads = kNormSums / kWidth;
  Vec sums[2 * kLoads];  // sums[v] lane l: sum v * Vec::size() + l
  for (Vec& s : sums) s = Vec(0.0f);
  for (int64_t i = 0; i < n; i += kNormSums) {
    for (int u = 0; u < kLoads; ++u) {
      const int64_t at = i + u * kWidth;
      if (at >= n) break;
      const auto [a, b] = L::load(in + at, std::min(kWidth, n - at));
      sums[2 * u] = sums[2 * u] + a * a;
      sums[2 * u + 1] = sums[2 * u + 1] + b * b;
    }
  }
  alignas(64) float lanes[kNormSums];
  for (int v = 0; v < 2 * kLoads; ++v) sums[v].store(lanes + v * Vec::size());
  return fold_sums(lanes);
}

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
// The same for bfloat16 rows of whole kNormSums-value units, by bit operations (widen_bf16): a
// load of 2 * kSize values widens to the even-indexed ones and the odd-indexed ones, lane p of
// the two holding values 2p and 2p + 1 of the load. (kSize is 16 or 8: one or two loads a unit.)
inline float sum_of_squares_bf16(const c10::BFloat16* in, int64_t n) {
  constexpr int64_t kSize = FloatVec::size();
  constexpr int kLoads = kNormSums / (2 * kSize);
  FloatVec even[kLoads], odd[kLoads];  // even[u] lane p: sum u * 2 kSize + 2p
  for (int u = 0; u < kLoads; ++u) even[u] = odd[u] = FloatVec(0.0f);
  for (int64_t i = 0; i < n; i += kNormSums) {
    for (int u = 0; u < kLoads; ++u) {
      const auto [e, o] = widen_bf16(IntVec::loadu(in + i + u * 2 * kSize));
      even[u] = even[u] + e * e;
      odd[u] = odd[u] + o * o;
    }
  }
  alignas(64) float lanes[kNormSums];
  for (int u = 0; u < kLoads; ++u) {
    const auto [lo, hi] = at::vec::interleave2(even[u], odd[u]);  // back to index order
    lo.store(lanes + u * 2 * kSize);
    hi.store(lanes + u * 2 * kSize + kSize);
  }
  return fold_sums(lanes);
}

// bfloat16 rounding of float lanes between two float32 steps, widened back: the value
// `.to(torch.bfloat16)` leaves, up to a NaN's payload. Without round_to_bf16_bits's NaN
// select: a NaN stays a NaN (its rounding cannot carry out of the mantissa, for the low 16 bits
// of every NaN here are zero - widened bfloat16 values, and what float arithmetic makes of
// them), and the row's final store (narrow_bf16) writes every NaN as c10 does.
YARN_ALWAYS_INLINE FloatVec rounded_bf16(const FloatVec& x) {
  const IntVec bits = at::vec::cast<int32_t>(x);
  const IntVec lsb = shift_right_16(bits) & IntVec(1);
  return at::vec::cast<float>((bits + IntVec(0x7FFF) + lsb) &
                              IntVec(static_cast<int32_t>(0xFFFF0000u)));
}
#endif

// A norm weight as the loop multiplies by it, in float32: the weight itself (Qwen3), or
// 1 + weight (Qwen3.5's unit offset, the sum in float32 as the model forms it). Made once per
// call.
template <typename scalar_t>
void norm_scale(const scalar_t* weight, int64_t n, bool unit_offset, float* scale) {
  for (int64_t i = 0; i < n; ++i) {
    scale[i] = unit_offset ? 1.0f + static_cast<float>(weight[i]) : static_cast<float>(weight[i]);
  }
}

// Heads normalized per group: their sums of squares first (independent, so that the
// out-of-order core overlaps them), then their 1 / sqrt(mean + eps) in vector lanes, then each
// head's values.
constexpr int kNormGroup = 16;

// inverse[h] = 1 / sqrt(sum of squares / n + eps) of heads [0, count) (count <= kNormGroup),
// each step rounded as torch rounds it (mean, + eps, rsqrt as ATen's vectors form it: 1 / sqrt).
template <typename scalar_t>
void inverse_rms(const scalar_t* head, int64_t head_stride, int count, int64_t n, float eps,
                 bool bit_bf16, float* inverse) {
  using Vec = at::vec::Vectorized<float>;
  alignas(64) float totals[kNormGroup] = {};
  for (int h = 0; h < count; ++h) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
      if (bit_bf16) {
        totals[h] = sum_of_squares_bf16(head + h * head_stride, n);
        continue;
      }
    }
#endif
    totals[h] = sum_of_squares(head + h * head_stride, n);
  }
  for (int h = 0; h < kNormGroup; h += Vec::size()) {
    const Vec mean = Vec::loadu(totals + h) / Vec(static_cast<float>(n));
    (Vec(1.0f) / (mean + Vec(eps)).sqrt()).store(inverse + h);
  }
}

// RMSNorm of kWidth values in float lanes, as the models' modules compute it, given their
// head's inverse_rms, rounded to scalar_t as the module's output is: Qwen3's x * inverse_rms
// rounded to the dtype, times the weight; or, with unit_offset, Qwen3.5's x * inverse_rms *
// (1 + weight) in float32. `w0`, `w1` are norm_scale's values.
template <typename scalar_t, typename Vec>
YARN_ALWAYS_INLINE std::pair<Vec, Vec> normalized(const Vec& a, const Vec& b, const Vec& w0,
                                                  const Vec& w1, const Vec& inverse,
                                                  bool unit_offset) {
  if (unit_offset) return rounded<scalar_t>(a * inverse * w0, b * inverse * w1);
  const auto [y0, y1] = rounded<scalar_t>(a * inverse, b * inverse);
  return rounded<scalar_t>(w0 * y0, w1 * y1);
}

// One head normalized (RMSNorm, `scale` from norm_scale) and rotated with its cos/sin row
// (unpaired), in registers: the values a norm module would store, rotated exactly as
// rotate_row rotates a stored row (the same turn, the same roundings: rotate_inplace's bits),
// written to `out` (which may be `in`) with the pass-through features normalized.
template <typename scalar_t, bool interleaved>
void norm_rotate_row(const scalar_t* in, scalar_t* out, const float* scale, float inverse_rms,
                     bool unit_offset, const float* cos_sin, int64_t half, int64_t head_size) {
  using L = Lanes<scalar_t>;
  using F = Lanes<float>;
  using Vec = typename L::Vec;
  constexpr int64_t kSize = L::kSize;
  constexpr int64_t kWidth = L::kWidth;
  const Vec inverse(inverse_rms);
  const float* cos = cos_sin;
  const float* sin = cos_sin + half;
  auto norm = [&](int64_t at, int64_t m) YARN_ALWAYS_INLINE_LAMBDA {
    const auto [a, b] = L::load(in + at, m);
    const auto [w0, w1] = F::load(scale + at, m);
    return normalized<scalar_t>(a, b, w0, w1, inverse, unit_offset);
  };
  if constexpr (interleaved) {  // pairs (2i, 2i + 1): kSize pairs a unit
    for (int64_t i = 0; i < half; i += kSize) {
      const int64_t n = std::min(kSize, half - i);
      const auto [x0, x1] = norm(2 * i, 2 * n);
      auto [a, b] = at::vec::deinterleave2(x0, x1);
      const Vec c = n == kSize ? Vec::loadu(cos + i) : Vec::loadu(cos + i, n);
      const Vec s = n == kSize ? Vec::loadu(sin + i) : Vec::loadu(sin + i, n);
      turn<false>(a, b, c, s);
      const auto [y0, y1] = at::vec::interleave2(a, b);
      L::store(out + 2 * i, y0, y1, 2 * n);
    }
  } else {  // pairs (i, i + half): kWidth pairs a unit
    for (int64_t i = 0; i < half; i += kWidth) {
      const int64_t m = std::min(kWidth, half - i);
      auto [a0, a1] = norm(i, m);
      auto [b0, b1] = norm(half + i, m);
      const auto [c0, c1] = F::load(cos + i, m);
      const auto [s0, s1] = F::load(sin + i, m);
      turn<false>(a0, b0, c0, s0);
      turn<false>(a1, b1, c1, s1);
      L::store(out + i, a0, a1, m);
      L::store(out + half + i, b0, b1, m);
    }
  }
  for (int64_t i = 2 * half; i < head_size; i += kWidth) {
    const int64_t m = std::min(kWidth, head_size - i);
    const auto [y0, y1] = norm(i, m);
    L::store(out + i, y0, y1, m);
  }
}

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
// norm_rotate_row for bfloat16 by bit operations, without ATen's conversions: the row widened to
// its even- and odd-indexed values (widen_bf16), `scale` (norm_scale's values) and - for
// rotate_half pairs - the cos/sin row in paired layout (make_paired_row), each value rounded as
// the Lanes loop rounds it (c10's rounding, round_to_bf16_bits) and the same operations in the
// same order: norm_rotate_row's bits. Whole units of 2 * kSize values (kv_store_bit_path).
template <bool interleaved>
void norm_rotate_row_bf16(const c10::BFloat16* in, c10::BFloat16* out, const float* scale,
                          float inverse_rms, bool unit_offset, const float* cos_sin, int64_t half,
                          int64_t head_size) {
  constexpr int64_t kSize = FloatVec::size();
  const FloatVec inverse(inverse_rms);
  const float* cos = cos_sin;
  const float* sin = cos_sin + half;
  // the 2 * kSize values from `at`, normalized: (even-indexed, odd-indexed)
  auto norm = [&](int64_t at) YARN_ALWAYS_INLINE_LAMBDA {
    const auto [e, o] = widen_bf16(IntVec::loadu(in + at));
    const FloatVec we = FloatVec::loadu(scale + at);
    const FloatVec wo = FloatVec::loadu(scale + at + kSize);
    if (unit_offset) {
      return std::pair{rounded_bf16(e * inverse * we), rounded_bf16(o * inverse * wo)};
    }
    return std::pair{rounded_bf16(we * rounded_bf16(e * inverse)),
                     rounded_bf16(wo * rounded_bf16(o * inverse))};
  };
  if constexpr (interleaved) {  // a pair per 32-bit lane
    for (int64_t i = 0; i < half; i += kSize) {
      auto [a, b] = norm(2 * i);
      turn<false>(a, b, FloatVec::loadu(cos + i), FloatVec::loadu(sin + i));
      narrow_bf16(a, b).store(out + 2 * i);
    }
  } else {
    for (int64_t i = 0; i < half; i += 2 * kSize) {
      auto [a_even, a_odd] = norm(i);
      auto [b_even, b_odd] = norm(half + i);
      turn<false>(a_even, b_even, FloatVec::loadu(cos + i), FloatVec::loadu(sin + i));
      turn<false>(a_odd, b_odd, FloatVec::loadu(cos + i + kSize), FloatVec::loadu(sin + i + kSize));
      narrow_bf16(a_even, a_odd).store(out + i);
      narrow_bf16(b_even, b_odd).store(out + half + i);
    }
  }
  for (int64_t i = 2 * half; i < head_size; i += 2 * kSize) {
    const auto [e, o] = norm(i);
    narrow_bf16(e, o).store(out + i);
  }
}
#endif

// Whether a call's bfloat16 rows take the bit-operation loops: the rotation's condition
// (bit_bf16_path), and with a norm whole units of the sum of squares (kNormSums values, which
// are whole units of the rows too).
template <typename scalar_t>
bool kv_store_bit_path(bool interleaved, int64_t half, int64_t head_size, bool norm) {
  return bit_bf16_path<scalar_t>(interleaved, half) && (!norm || head_size % kNormSums == 0);
}

// One q or k head normalized and rotated: by the bit loops (`bit`, bfloat16) or ATen's lanes.
template <typename scalar_t, bool interleaved>
YARN_ALWAYS_INLINE void norm_rotate_head(const scalar_t* in, scalar_t* out, const float* scale,
                                         float inverse_rms, bool unit_offset, const float* cos_sin,
                                         int64_t half, int64_t head_size, bool bit) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    if (bit) {
      return norm_rotate_row_bf16<interleaved>(in, out, scale, inverse_rms, unit_offset, cos_sin,
                                               half, head_size);
    }
  }
#endif
  norm_rotate_row<scalar_t, interleaved>(in, out, scale, inverse_rms, unit_offset, cos_sin, half,
                                         head_size);
}

// float8_e4m3fn as vLLM stores a KV cache: divided by the scale, saturated to the format's
// largest finite value (an infinity too); a NaN stays a NaN.
inline c10::Float8_e4m3fn to_fp8(float x, float scale) {
  constexpr float kMax = 448.0f;
  const float scaled = x / scale;
  return c10::Float8_e4m3fn(std::isnan(scaled) ? scaled : std::clamp(scaled, -kMax, kMax));
}

template <typename scalar_t>
void store_fp8_row(const scalar_t* in, c10::Float8_e4m3fn* out, int64_t n, float scale) {
  for (int64_t i = 0; i < n; ++i) out[i] = to_fp8(static_cast<float>(in[i]), scale);
}

inline int64_t slot_at(const KvStoreJob& job, int64_t token) {
  const int64_t offset = token * job.slot_stride;
  return job.int32_slots ? static_cast<const int32_t*>(job.slots)[offset]
                         : static_cast<const int64_t*>(job.slots)[offset];
}

template <typename scalar_t>
scalar_t* cache_row(const PagedCache& cache, int64_t block_size, int64_t slot, int64_t head,
                    int64_t head_size) {
  const int64_t block = slot / block_size;
  const int64_t row = slot % block_size;
  return static_cast<scalar_t*>(cache.data) + block * cache.block_stride + row * cache.slot_stride +
         head * head_size;
}

template <typename scalar_t, bool interleaved>
void rotate_store_kv_typed(const KvStoreJob& job, int64_t begin, int64_t end) {
  using acc_t = acc_type<scalar_t>;
  using fp8 = c10::Float8_e4m3fn;
  const RotateJob& r = job.rotation;
  const int64_t head_size = r.head_size;
  // bfloat16 rows of whole units take the bit-operation loops, with rotate_half's cos/sin rows
  // and the norm's scales laid out for them (paired).
  const bool norm = job.q_weight != nullptr || job.k_weight != nullptr;
  const bool bit_bf16 = kv_store_bit_path<scalar_t>(interleaved, r.half, head_size, norm);
  BlockRows<scalar_t> block_rows(r, kBlock, bit_bf16 && !interleaved);
  const acc_t* const* rows = block_rows.rows();
  TokenPositions positions[kBlock];
  // A k head's rotated values on their way to a float8 cache (or back into k).
  scalar_t rotated[kKvMaxHeadSize];
  alignas(64) float inverse[kNormGroup];  // inverse_rms of the heads of the current group
  alignas(64) float q_norm_scale[kKvMaxHeadSize];
  alignas(64) float k_norm_scale[kKvMaxHeadSize];
  alignas(64) float scratch[kKvMaxHeadSize];
  // A weight's scales, paired for the bit loops.
  auto scales = [&](const void* weight, float* out) -> const float* {
    if (weight == nullptr) return nullptr;
    norm_scale(static_cast<const scalar_t*>(weight), head_size, job.unit_offset,
               bit_bf16 ? scratch : out);
    if (bit_bf16) make_paired_row(scratch, out, head_size / 2);
    return out;
  };
  const float* q_weight = scales(job.q_weight, q_norm_scale);
  const float* k_weight = scales(job.k_weight, k_norm_scale);
  const float k_scale = job.fp8 ? *job.k_scale : 1.0f;
  const float v_scale = job.fp8 ? *job.v_scale : 1.0f;
  // Rotation without norm: q in place; k into another row, with the pass-through features.
  const RowGeometry in_place{r.half, head_size, 1, 1, false, bit_bf16};
  const RowGeometry copying{r.half, head_size, 1, 1, true, bit_bf16};
  for (int64_t block = begin; block < end; block += kBlock) {
    const int count = static_cast<int>(std::min(kBlock, end - block));
    for (int t = 0; t < count; ++t) {
      positions[t] = token_positions(r, (block + t) * job.position_stride);
    }
    block_rows.find(positions, count);
    for (int t = 0; t < count; ++t) {
      const int64_t token = block + t;
      const acc_t* row = rows[t];
      auto* q = static_cast<scalar_t*>(job.q.data) + token * job.q.token_stride;
      for (int64_t h = 0; h < job.q.num_heads; ++h, q += job.q.head_stride) {
        if (q_weight == nullptr) {
          rotate_row<scalar_t, interleaved, false>(q, q, row, in_place);
          continue;
        }
        const int group = static_cast<int>(h % kNormGroup);
        if (group == 0) {
          const int count = static_cast<int>(std::min<int64_t>(kNormGroup, job.q.num_heads - h));
          inverse_rms(q, job.q.head_stride, count, head_size, job.eps, bit_bf16, inverse);
        }
        norm_rotate_head<scalar_t, interleaved>(q, q, q_weight, inverse[group], job.unit_offset,
                                                row, r.half, head_size, bit_bf16);
      }
      const int64_t slot = slot_at(job, token);
      if (slot < 0 && !job.write_k) continue;  // padding: nothing to write
      auto* k = static_cast<scalar_t*>(job.k.data) + token * job.k.token_stride;
      const auto* v = static_cast<const scalar_t*>(job.v.data) + token * job.v.token_stride;
      for (int64_t h = 0; h < job.k.num_heads; ++h, k += job.k.head_stride) {
        // The rotated head goes where it is stored: the cache row (same dtype), else a scratch
        // row that is quantized into it; k itself takes a copy when asked.
        scalar_t* target = rotated;
        if (slot >= 0 && !job.fp8) {
          target = cache_row<scalar_t>(job.k_cache, job.block_size, slot, h, head_size);
        }
        if (k_weight != nullptr) {
          const int group = static_cast<int>(h % kNormGroup);
          if (group == 0) {
            const int count = static_cast<int>(std::min<int64_t>(kNormGroup, job.k.num_heads - h));
            inverse_rms(k, job.k.head_stride, count, head_size, job.eps, bit_bf16, inverse);
          }
          norm_rotate_head<scalar_t, interleaved>(k, target, k_weight, inverse[group],
                                                  job.unit_offset, row, r.half, head_size,
                                                  bit_bf16);
        } else {
          rotate_row<scalar_t, interleaved, false>(k, target, row, copying);
        }
        if (slot >= 0 && job.fp8) {
          store_fp8_row(target, cache_row<fp8>(job.k_cache, job.block_size, slot, h, head_size),
                        head_size, k_scale);
        }
        if (job.write_k) std::memcpy(k, target, head_size * sizeof(scalar_t));
      }
      if (slot < 0) continue;
      for (int64_t h = 0; h < job.v.num_heads; ++h, v += job.v.head_stride) {
        if (job.fp8) {
          store_fp8_row(v, cache_row<fp8>(job.v_cache, job.block_size, slot, h, job.v_head_size),
                        job.v_head_size, v_scale);
        } else {
          std::memcpy(cache_row<scalar_t>(job.v_cache, job.block_size, slot, h, job.v_head_size), v,
                      job.v_head_size * sizeof(scalar_t));
        }
      }
    }
  }
}

template <typename scalar_t>
void rotate_store_kv_dtype(const KvStoreJob& job, int64_t begin, int64_t end) {
  if (job.rotation.interleaved) return rotate_store_kv_typed<scalar_t, true>(job, begin, end);
  rotate_store_kv_typed<scalar_t, false>(job, begin, end);
}

}  // namespace CPU_CAPABILITY
}  // namespace yarn_ext::cpu

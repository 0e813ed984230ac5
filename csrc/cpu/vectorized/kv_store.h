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

// The sum of squares of n values in float32, in one order on every instruction-set copy (so
// that every copy normalizes to the same bits): 16 running sums, value i added to sum i % 16
// in index order, then the 16 sums added pairwise. (Lanes are 16 floats, or two vectors of 8
// holding values i % 16 < 8 and >= 8; a unit's tail loads zeros, which change no sum.)
template <typename scalar_t>
float sum_of_squares(const scalar_t* in, int64_t n) {
  using L = Lanes<scalar_t>;
  using Vec = typename L::Vec;
  constexpr int64_t kWidth = L::kWidth;
  constexpr int kSums = 16;
  static_assert(Vec::size() == 8 || Vec::size() == 16);
  Vec sums[kSums / Vec::size()];
  for (Vec& s : sums) s = Vec(0.0f);
  for (int64_t i = 0; i < n; i += kWidth) {
    const auto [a, b] = L::load(in + i, std::min(kWidth, n - i));
    if constexpr (Vec::size() == kSums) {  // a: values i.. i + 15, b: i + 16.. i + 31
      sums[0] = sums[0] + a * a;
      sums[0] = sums[0] + b * b;
    } else {  // a: values i.. i + 7, b: i + 8.. i + 15
      sums[0] = sums[0] + a * a;
      sums[kSums / Vec::size() - 1] = sums[kSums / Vec::size() - 1] + b * b;
    }
  }
  float lanes[kSums];
  for (int v = 0; v < kSums / Vec::size(); ++v) sums[v].store(lanes + v * Vec::size());
  for (int width = kSums / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] = lanes[2 * j] + lanes[2 * j + 1];
  }
  return lanes[0];
}

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
                 float* inverse) {
  using Vec = at::vec::Vectorized<float>;
  alignas(64) float totals[kNormGroup] = {};
  for (int h = 0; h < count; ++h) totals[h] = sum_of_squares(head + h * head_stride, n);
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
  // The normalizing rotation (norm_rotate_row) reads plain cos/sin rows: with a norm, every
  // head takes the vector loops of ATen's lanes (the same bits as the bfloat16 bit loops,
  // which want rows laid out for them).
  const bool norm = job.q_weight != nullptr || job.k_weight != nullptr;
  const bool bit_bf16 = !norm && bit_bf16_path<scalar_t>(interleaved, r.half);
  BlockRows<scalar_t> block_rows(r, kBlock, bit_bf16 && !interleaved);
  const acc_t* const* rows = block_rows.rows();
  TokenPositions positions[kBlock];
  // A k head's rotated values on their way to a float8 cache (or back into k).
  scalar_t rotated[kKvMaxHeadSize];
  alignas(64) float inverse[kNormGroup];  // inverse_rms of the heads of the current group
  float q_norm_scale[kKvMaxHeadSize];
  float k_norm_scale[kKvMaxHeadSize];
  const float* q_weight = nullptr;
  const float* k_weight = nullptr;
  if (job.q_weight != nullptr) {
    norm_scale(static_cast<const scalar_t*>(job.q_weight), head_size, job.unit_offset,
               q_norm_scale);
    q_weight = q_norm_scale;
  }
  if (job.k_weight != nullptr) {
    norm_scale(static_cast<const scalar_t*>(job.k_weight), head_size, job.unit_offset,
               k_norm_scale);
    k_weight = k_norm_scale;
  }
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
          inverse_rms(q, job.q.head_stride, count, head_size, job.eps, inverse);
        }
        norm_rotate_row<scalar_t, interleaved>(q, q, q_weight, inverse[group], job.unit_offset, row,
                                               r.half, head_size);
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
            inverse_rms(k, job.k.head_stride, count, head_size, job.eps, inverse);
          }
          norm_rotate_row<scalar_t, interleaved>(k, target, k_weight, inverse[group],
                                                 job.unit_offset, row, r.half, head_size);
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

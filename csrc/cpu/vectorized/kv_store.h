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
#include <functional>
#include <limits>
#include <type_traits>
#include <utility>

#include "cpu/cpu_kernels.h"
#include "cpu/vectorized/bf16_convert.h"
#include "cpu/vectorized/block_tables.h"
#include "cpu/vectorized/rotate_row.h"

namespace yarn_ext::cpu {
namespace CPU_CAPABILITY {

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

// Heads normalized per group: their sums of squares first (independent, so that the
// out-of-order core overlaps them), then their sums folded and their 1 / sqrt(mean + eps), both
// in vector lanes for the whole group, then each head's values.
constexpr int kNormGroup = 16;
#if defined(CPU_CAPABILITY_AVX512_BF16)
static_assert(kNormGroup == 16, "heads_in_range checks a group in one vector of 16 lanes");
#endif

// A group's sums folded together: head h's `run` partial sums (a power of two, in index order:
// the kNormSums sums, or the first fold's halves of them) stored at sums[h * run + m], each
// head's total left at sums[h]. Every pass adds the adjacent pairs of the whole array, in vector
// lanes for all kNormGroup heads at once (a head's sums one by one would be a serial chain of
// scalar adds); a head's sums are a whole aligned run, so the pairs never cross heads and each
// head folds in its own order: sum 2j + sum 2j + 1, halving. (`combine`: another operation the
// same way, the AVX512_BF16 copy's least square.)
template <typename Combine = std::plus<>>
void fold_sums(float* sums, int run, Combine combine = {}) {
  using Vec = at::vec::Vectorized<float>;
  constexpr int kSize = Vec::size();
  static_assert(kNormGroup % kSize == 0);
  for (int n = kNormGroup * run; n > kNormGroup; n /= 2) {
    // In place: a step writes [j, j + kSize) after reading [2j, 2j + 2 kSize), never beyond
    // what it and the steps before it have read.
    for (int j = 0; j < n / 2; j += kSize) {
      const auto [even, odd] =
          at::vec::deinterleave2(Vec::loadu(sums + 2 * j), Vec::loadu(sums + 2 * j + kSize));
      combine(even, odd).store(sums + j);
    }
  }
}

// A head's kNormSums sums of squares, stored at `sums` in index order (for fold_sums).
template <typename scalar_t>
void sum_of_squares(const scalar_t* in, int64_t n, float* sums) {
  using L = Lanes<scalar_t>;
  using Vec = typename L::Vec;
  constexpr int64_t kWidth = L::kWidth;  // values a load: 2 vectors, in index order
  static_assert(kNormSums % kWidth == 0);
  constexpr int kLoads = kNormSums / kWidth;
  Vec partial[2 * kLoads];  // partial[v] lane l: sum v * Vec::size() + l
  for (Vec& s : partial) s = Vec(0.0f);
  for (int64_t i = 0; i < n; i += kNormSums) {
    for (int u = 0; u < kLoads; ++u) {
      const int64_t at = i + u * kWidth;
      if (at >= n) break;
      const auto [a, b] = L::load(in + at, std::min(kWidth, n - at));
      partial[2 * u] = partial[2 * u] + a * a;
      partial[2 * u + 1] = partial[2 * u + 1] + b * b;
    }
  }
  for (int v = 0; v < 2 * kLoads; ++v) partial[v].store(sums + v * Vec::size());
}

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
// The same for bfloat16 rows of whole kNormSums-value units, by bit operations (widen_bf16): a
// load of 2 * kSize values widens to the even-indexed ones and the odd-indexed ones, lane p of
// the two holding values 2p and 2p + 1 of the load. (kSize is 16 or 8: one or two loads a unit.)
// Their lanes added are the fold's first step, stored: kNormSums / 2 sums, in index order.
// With kLeast (the AVX512_BF16 copy), also each lane's least square, stored at `least`
// (kSize values; for heads_in_range).
template <bool kLeast = false>
void sum_of_squares_bf16(const c10::BFloat16* in, int64_t n, float* halves,
                         float* least = nullptr) {
  constexpr int64_t kSize = FloatVec::size();
  constexpr int kLoads = kNormSums / (2 * kSize);
  FloatVec even[kLoads], odd[kLoads];  // even[u] lane p: sum u * 2 kSize + 2p
  for (int u = 0; u < kLoads; ++u) even[u] = odd[u] = FloatVec(0.0f);
  [[maybe_unused]] FloatVec least_square(std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < n; i += kNormSums) {
    for (int u = 0; u < kLoads; ++u) {
      const auto [e, o] = widen_bf16(IntVec::loadu(in + i + u * 2 * kSize));
      const FloatVec e2 = e * e;
      const FloatVec o2 = o * o;
      even[u] = even[u] + e2;
      odd[u] = odd[u] + o2;
#if defined(CPU_CAPABILITY_AVX512_BF16)
      if constexpr (kLeast) least_square = least_of(least_square, least_of(e2, o2));
#endif
    }
  }
  for (int u = 0; u < kLoads; ++u) (even[u] + odd[u]).store(halves + u * kSize);
  if constexpr (kLeast) least_square.store(least);
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

// inverse[h] = 1 / sqrt(sum of squares / n + eps) of heads [0, count) (count <= kNormGroup),
// each step rounded as torch rounds it (mean, + eps, rsqrt as ATen's vectors form it: 1 / sqrt).
// With `in_range` (the AVX512_BF16 copy's bfloat16 rows), also whether each head may take the
// conversion loop (heads_in_range).
template <typename scalar_t>
void inverse_rms(const scalar_t* head, int64_t head_stride, int count, int64_t n, float eps,
                 bool bit_bf16, float* inverse, bool* in_range = nullptr) {
  using Vec = at::vec::Vectorized<float>;
  alignas(64) float sums[kNormGroup * kNormSums];
  int run = kNormSums;  // each head's sums in `sums`
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    if (bit_bf16) run = kNormSums / 2;
  }
#endif
#if defined(CPU_CAPABILITY_AVX512_BF16)
  alignas(64) float least[kNormGroup * Vec::size()];  // each head's lanes' least squares
#endif
  for (int h = 0; h < count; ++h) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
#if defined(CPU_CAPABILITY_AVX512_BF16)
      if (in_range != nullptr) {
        sum_of_squares_bf16<true>(head + h * head_stride, n, sums + h * run,
                                  least + h * Vec::size());
        continue;
      }
#endif
      if (bit_bf16) {
        sum_of_squares_bf16(head + h * head_stride, n, sums + h * run);
        continue;
      }
    }
#endif
    sum_of_squares(head + h * head_stride, n, sums + h * run);
  }
  // A short group's missing heads fold zeros (their totals unused).
  std::fill(sums + count * run, sums + kNormGroup * run, 0.0f);
  fold_sums(sums, run);
  for (int h = 0; h < kNormGroup; h += Vec::size()) {
    const Vec mean = Vec::loadu(sums + h) / Vec(static_cast<float>(n));
    (Vec(1.0f) / (mean + Vec(eps)).sqrt()).store(inverse + h);
  }
#if defined(CPU_CAPABILITY_AVX512_BF16)
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    if (in_range != nullptr) {
      std::fill(least + count * Vec::size(), least + kNormGroup * Vec::size(), 0.0f);
      fold_sums(least, Vec::size(), least_of);
      heads_in_range(inverse, least, in_range);
    }
  }
#endif
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

// The loop that normalizes and rotates a q or k head: ATen's lanes, the bit-operation loops
// (bfloat16), or the conversion loop (the AVX512_BF16 copy's bfloat16, bf16_convert.h).
enum class NormLoop { kLanes, kBits, kConvert };

// A norm's scales (norm_scale's): in index order for the Lanes loop, and as the call's other
// loop reads them (paired for the bit loops, laid out for the conversion loop).
struct NormScales {
  const float* plain;
  const float* laid_out;
};

template <typename scalar_t, bool interleaved>
YARN_ALWAYS_INLINE void norm_rotate_head(const scalar_t* in, scalar_t* out,
                                         const NormScales& scales, float inverse_rms,
                                         bool unit_offset, const float* cos_sin, int64_t half,
                                         int64_t head_size, NormLoop loop) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
#if defined(CPU_CAPABILITY_AVX512_BF16)
    if (loop == NormLoop::kConvert) {
      return norm_rotate_row_convert<interleaved>(in, out, scales.laid_out, inverse_rms,
                                                  unit_offset, cos_sin, half, head_size);
    }
#endif
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
    if (loop == NormLoop::kBits) {
      return norm_rotate_row_bf16<interleaved>(in, out, scales.laid_out, inverse_rms, unit_offset,
                                               cos_sin, half, head_size);
    }
#endif
  }
  norm_rotate_row<scalar_t, interleaved>(in, out, scales.plain, inverse_rms, unit_offset, cos_sin,
                                         half, head_size);
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
  alignas(64) float q_plain[kKvMaxHeadSize];
  alignas(64) float k_plain[kKvMaxHeadSize];
  auto plain = [&](const void* weight, float* out) -> const float* {
    if (weight == nullptr) return nullptr;
    norm_scale(static_cast<const scalar_t*>(weight), head_size, job.unit_offset, out);
    return out;
  };
  const float* q_scale = plain(job.q_weight, q_plain);
  const float* k_scale = plain(job.k_weight, k_plain);
  // In the AVX512_BF16 copy, when q and k are both normalized, by scales in its range, their
  // heads take the conversion loop wherever they and their token's cos/sin row are in range too,
  // and the Lanes loop elsewhere: both read unpaired rows.
  bool convert = false;
#if defined(CPU_CAPABILITY_AVX512_BF16)
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    convert = bit_bf16 && q_scale != nullptr && k_scale != nullptr &&
              scales_in_range(q_scale, head_size) && scales_in_range(k_scale, head_size);
  }
#endif
  alignas(64) float q_laid_out[kKvMaxHeadSize];
  alignas(64) float k_laid_out[kKvMaxHeadSize];
  auto laid_out = [&](const float* scale, float* out) -> NormScales {
    if (scale == nullptr || !bit_bf16) return {scale, scale};
#if defined(CPU_CAPABILITY_AVX512_BF16)
    if (convert) {
      lay_out_scales(scale, head_size, interleaved, out);
      return {scale, out};
    }
#endif
    make_paired_row(scale, out, head_size / 2);
    return {scale, out};
  };
  const NormScales q_scales = laid_out(q_scale, q_laid_out);
  const NormScales k_scales = laid_out(k_scale, k_laid_out);
  BlockRows<scalar_t> block_rows(r, kBlock, bit_bf16 && !interleaved && !convert);
  const acc_t* const* rows = block_rows.rows();
  TokenPositions positions[kBlock];
  // A k head's rotated values on their way to a float8 cache (or back into k).
  scalar_t rotated[kKvMaxHeadSize];
  alignas(64) float inverse[kNormGroup];  // inverse_rms of the heads of the current group
  bool in_range[kNormGroup];              // and whether they may take the conversion loop
  const int64_t row_bytes = head_size * static_cast<int64_t>(sizeof(scalar_t));
  const int64_t v_row_bytes = job.v_head_size * static_cast<int64_t>(sizeof(scalar_t));
  const int64_t cache_element = job.fp8 ? 1 : static_cast<int64_t>(sizeof(scalar_t));
  auto cache_head = [&](const PagedCache& cache, int64_t slot, int64_t h,
                        int64_t size) -> const void* {
    if (job.fp8) return cache_row<fp8>(cache, job.block_size, slot, h, size);
    return cache_row<scalar_t>(cache, job.block_size, slot, h, size);
  };
  const float k_scale_fp8 = job.fp8 ? *job.k_scale : 1.0f;
  const float v_scale_fp8 = job.fp8 ? *job.v_scale : 1.0f;
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
      bool row_in_range = false;
#if defined(CPU_CAPABILITY_AVX512_BF16)
      if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
        row_in_range = convert && cos_sin_in_range(row, r.half);
      }
#endif
      // The loop for a head of the current group (inverse_rms has filled in_range).
      auto loop = [&](int group) {
        if (convert) return row_in_range && in_range[group] ? NormLoop::kConvert : NormLoop::kLanes;
        return bit_bf16 ? NormLoop::kBits : NormLoop::kLanes;
      };
      bool* group_in_range = row_in_range ? in_range : nullptr;
      // The next token's rows are asked for a head at a time while this token's heads are worked
      // on: its q, k and v into L2, where the sum of squares, the first pass over a group of
      // heads, would otherwise wait for memory with nothing to overlap; its cache rows into L1,
      // so that the stores find their lines there. (Measured at 4096 tokens: about a fifth of
      // the time saved.)
      const bool ahead = token + 1 < end;
      const int64_t next_slot = ahead ? slot_at(job, token + 1) : -1;
      auto* q = static_cast<scalar_t*>(job.q.data) + token * job.q.token_stride;
      for (int64_t h = 0; h < job.q.num_heads; ++h, q += job.q.head_stride) {
        if (ahead) prefetch_to_l2(q + job.q.token_stride, row_bytes);
        if (q_scale == nullptr) {
          rotate_row<scalar_t, interleaved, false>(q, q, row, in_place);
          continue;
        }
        const int group = static_cast<int>(h % kNormGroup);
        if (group == 0) {
          const int count = static_cast<int>(std::min<int64_t>(kNormGroup, job.q.num_heads - h));
          inverse_rms(q, job.q.head_stride, count, head_size, job.eps, bit_bf16, inverse,
                      group_in_range);
        }
        norm_rotate_head<scalar_t, interleaved>(q, q, q_scales, inverse[group], job.unit_offset,
                                                row, r.half, head_size, loop(group));
      }
      const int64_t slot = slot_at(job, token);
      if (slot < 0 && !job.write_k) continue;  // padding: nothing to write
      auto* k = static_cast<scalar_t*>(job.k.data) + token * job.k.token_stride;
      const auto* v = static_cast<const scalar_t*>(job.v.data) + token * job.v.token_stride;
      for (int64_t h = 0; h < job.k.num_heads; ++h, k += job.k.head_stride) {
        if (ahead) {
          prefetch_to_l2(k + job.k.token_stride, row_bytes);
          prefetch_to_l2(v + h * job.v.head_stride + job.v.token_stride, v_row_bytes);
        }
        if (next_slot >= 0) {
          prefetch(cache_head(job.k_cache, next_slot, h, head_size), head_size * cache_element);
          prefetch(cache_head(job.v_cache, next_slot, h, job.v_head_size),
                   job.v_head_size * cache_element);
        }
        // The rotated head goes where it is stored: the cache row (same dtype), else a scratch
        // row that is quantized into it; k itself takes a copy when asked.
        scalar_t* target = rotated;
        if (slot >= 0 && !job.fp8) {
          target = cache_row<scalar_t>(job.k_cache, job.block_size, slot, h, head_size);
        }
        if (k_scale != nullptr) {
          const int group = static_cast<int>(h % kNormGroup);
          if (group == 0) {
            const int count = static_cast<int>(std::min<int64_t>(kNormGroup, job.k.num_heads - h));
            inverse_rms(k, job.k.head_stride, count, head_size, job.eps, bit_bf16, inverse,
                        group_in_range);
          }
          norm_rotate_head<scalar_t, interleaved>(k, target, k_scales, inverse[group],
                                                  job.unit_offset, row, r.half, head_size,
                                                  loop(group));
        } else {
          rotate_row<scalar_t, interleaved, false>(k, target, row, copying);
        }
        if (slot >= 0 && job.fp8) {
          store_fp8_row(target, cache_row<fp8>(job.k_cache, job.block_size, slot, h, head_size),
                        head_size, k_scale_fp8);
        }
        if (job.write_k) std::memcpy(k, target, head_size * sizeof(scalar_t));
      }
      if (slot < 0) continue;
      if (!job.fp8 && job.v.head_stride == job.v_head_size) {
        // the token's v heads lie next to each other, as the cache row's do: one copy
        std::memcpy(cache_row<scalar_t>(job.v_cache, job.block_size, slot, 0, job.v_head_size), v,
                    job.v.num_heads * job.v_head_size * sizeof(scalar_t));
        continue;
      }
      for (int64_t h = 0; h < job.v.num_heads; ++h, v += job.v.head_stride) {
        if (job.fp8) {
          store_fp8_row(v, cache_row<fp8>(job.v_cache, job.block_size, slot, h, job.v_head_size),
                        job.v_head_size, v_scale_fp8);
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

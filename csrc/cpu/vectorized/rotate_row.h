// One head vector rotated with ATen vectors: bfloat16/float16 widened to float32 lanes (one
// rounding on the way out), float32 as is, float64 in float64. Two vectors of the accumulation
// type are the unit - one vector of a 16-bit type - so every dtype takes whole loads.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "yarn_ext/core/rotation.h"

// The per-vector helpers must inline into the row loops (GCC does not always on its own).
#define YARN_ALWAYS_INLINE __attribute__((always_inline)) inline
// A lambda that must inline into its loop (GCC otherwise may call it, returning its vectors
// through memory).
#define YARN_ALWAYS_INLINE_LAMBDA __attribute__((always_inline))

namespace yarn_ext::cpu {
namespace CPU_CAPABILITY {

template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

// Up to kWidth consecutive elements as two vectors of acc_type; n < kWidth loads and stores
// only the first n (the tail of a row whose length is not a multiple of the width).
template <typename scalar_t>
struct Lanes {
  using acc_t = acc_type<scalar_t>;
  using Vec = at::vec::Vectorized<acc_t>;
  static constexpr int64_t kSize = Vec::size();
  static constexpr int64_t kWidth = 2 * kSize;

  YARN_ALWAYS_INLINE static std::pair<Vec, Vec> load(const scalar_t* p, int64_t n) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      if (n == kWidth) return {Vec::loadu(p), Vec::loadu(p + kSize)};
      return {Vec::loadu(p, std::min(n, kSize)),
              n > kSize ? Vec::loadu(p + kSize, n - kSize) : Vec(acc_t(0))};
    } else {
      using Narrow = at::vec::Vectorized<scalar_t>;
      static_assert(Narrow::size() == kWidth);
      const Narrow v = n == kWidth ? Narrow::loadu(p) : Narrow::loadu(p, n);
      auto [lo, hi] = at::vec::convert_to_float<scalar_t>(v);
      return {lo, hi};
    }
  }

  YARN_ALWAYS_INLINE static void store(scalar_t* p, const Vec& lo, const Vec& hi, int64_t n) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      if (n == kWidth) {
        lo.store(p);
        hi.store(p + kSize);
        return;
      }
      lo.store(p, std::min(n, kSize));
      if (n > kSize) hi.store(p + kSize, n - kSize);
    } else {
      // ATen's x86 conversions write a NaN as 0xFFFF (bfloat16) or keep its payload (float16);
      // c10's - the DEFAULT copy's - write 0x7FC0 / 0x7E00. A unit holding a NaN takes c10's
      // conversion, so that every copy writes the same bits.
      if ((lo.isnan() | hi.isnan()).zero_mask() != (1 << kSize) - 1) {
        acc_t values[kWidth];
        lo.store(values);
        hi.store(values + kSize);
        for (int64_t j = 0; j < n; ++j) p[j] = static_cast<scalar_t>(values[j]);
        return;
      }
      const auto v = at::vec::convert_from_float<scalar_t>(lo, hi);
      if (n == kWidth) {
        v.store(p);
      } else {
        v.store(p, n);
      }
    }
  }
};

// The pair turn of rotation::rotate_pair, on vectors, in the same operation order (so every
// instruction set rounds alike); the inverse uses -sin, which the sign flips below spell out.
template <bool inverse, typename Vec>
YARN_ALWAYS_INLINE void turn(Vec& a, Vec& b, const Vec& cos, const Vec& sin) {
  const Vec rotated_a = inverse ? a * cos + b * sin : a * cos - b * sin;
  const Vec rotated_b = inverse ? b * cos - a * sin : b * cos + a * sin;
  a = rotated_a;
  b = rotated_b;
}

// NeoX / rotate_half pairs: feature i with i + half. One unit: n <= kWidth pairs from i.
template <typename scalar_t, bool inverse>
YARN_ALWAYS_INLINE void rotate_half_unit(const scalar_t* in, scalar_t* out,
                                         const acc_type<scalar_t>* cos,
                                         const acc_type<scalar_t>* sin, int64_t half, int64_t i,
                                         int64_t n) {
  using L = Lanes<scalar_t>;
  using C = Lanes<acc_type<scalar_t>>;
  auto [a0, a1] = L::load(in + i, n);
  auto [b0, b1] = L::load(in + half + i, n);
  const auto [c0, c1] = C::load(cos + i, n);
  const auto [s0, s1] = C::load(sin + i, n);
  turn<inverse>(a0, b0, c0, s0);
  turn<inverse>(a1, b1, c1, s1);
  L::store(out + i, a0, a1, n);
  L::store(out + half + i, b0, b1, n);
}

// Whole units in a loop of their own, so that their width is a constant there (the partial
// loads and stores of a tail stay out of it), then the tail.
template <typename scalar_t, bool inverse>
void rotate_half_pairs(const scalar_t* in, scalar_t* out, const acc_type<scalar_t>* cos,
                       const acc_type<scalar_t>* sin, int64_t half) {
  constexpr int64_t kWidth = Lanes<scalar_t>::kWidth;
  int64_t i = 0;
  for (; i + kWidth <= half; i += kWidth) {
    rotate_half_unit<scalar_t, inverse>(in, out, cos, sin, half, i, kWidth);
  }
  if (i < half) rotate_half_unit<scalar_t, inverse>(in, out, cos, sin, half, i, half - i);
}

// GPT-J / interleaved pairs: feature 2i with 2i + 1. One unit holds n <= kSize pairs from i,
// which deinterleave into a vector of first and a vector of second elements.
template <typename scalar_t, bool inverse>
YARN_ALWAYS_INLINE void rotate_interleaved_unit(const scalar_t* in, scalar_t* out,
                                                const acc_type<scalar_t>* cos,
                                                const acc_type<scalar_t>* sin, int64_t i,
                                                int64_t n) {
  using L = Lanes<scalar_t>;
  using Vec = typename L::Vec;
  const auto [x0, x1] = L::load(in + 2 * i, 2 * n);
  auto [a, b] = at::vec::deinterleave2(x0, x1);
  const Vec c = n == L::kSize ? Vec::loadu(cos + i) : Vec::loadu(cos + i, n);
  const Vec s = n == L::kSize ? Vec::loadu(sin + i) : Vec::loadu(sin + i, n);
  turn<inverse>(a, b, c, s);
  const auto [y0, y1] = at::vec::interleave2(a, b);
  L::store(out + 2 * i, y0, y1, 2 * n);
}

template <typename scalar_t, bool inverse>
void rotate_interleaved_pairs(const scalar_t* in, scalar_t* out, const acc_type<scalar_t>* cos,
                              const acc_type<scalar_t>* sin, int64_t half) {
  constexpr int64_t kSize = Lanes<scalar_t>::kSize;
  int64_t i = 0;
  for (; i + kSize <= half; i += kSize) {
    rotate_interleaved_unit<scalar_t, inverse>(in, out, cos, sin, i, kSize);
  }
  if (i < half) rotate_interleaved_unit<scalar_t, inverse>(in, out, cos, sin, i, half - i);
}

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
// bfloat16 by bit operations, without lane crossing: a 32-bit lane holds two bfloat16, the even
// element in its low half and the odd one in its high half, and each widens to a float32 with one
// shift or mask. For interleaved pairs that is a pair per lane; for rotate_half pairs the even and
// odd elements form two vectors, whose cos/sin the caller lays out to match (paired rows, below).
// (x86 vectors only: the generic vectors' integer arithmetic would overflow signed ints.)
constexpr bool kBitBFloat16 = true;
using IntVec = at::vec::Vectorized<int32_t>;
using FloatVec = at::vec::Vectorized<float>;

// Shifts by an immediate count (at::vec's shift operators take a vector of counts).
#if defined(CPU_CAPABILITY_AVX512)
YARN_ALWAYS_INLINE IntVec shift_left_16(const IntVec& v) {
  return _mm512_slli_epi32(v, 16);
}
YARN_ALWAYS_INLINE IntVec shift_right_16(const IntVec& v) {
  return _mm512_srli_epi32(v, 16);
}
#else
YARN_ALWAYS_INLINE IntVec shift_left_16(const IntVec& v) {
  return _mm256_slli_epi32(v, 16);
}
YARN_ALWAYS_INLINE IntVec shift_right_16(const IntVec& v) {
  return _mm256_srli_epi32(v, 16);
}
#endif

YARN_ALWAYS_INLINE std::pair<FloatVec, FloatVec> widen_bf16(const IntVec& v) {
  return {at::vec::cast<float>(shift_left_16(v)),
          at::vec::cast<float>(v & IntVec(static_cast<int32_t>(0xFFFF0000u)))};
}

// c10::BFloat16's rounding - to nearest even, NaN to 0x7FC0 - of each lane, left in the lane's
// low 16 bits (high = false) or its high 16 bits (high = true, the low ones zero), so that two
// of them pack with one or.
template <bool high>
YARN_ALWAYS_INLINE IntVec round_to_bf16_bits(const FloatVec& x) {
  const IntVec bits = at::vec::cast<int32_t>(x);
  const IntVec lsb = shift_right_16(bits) & IntVec(1);
  const IntVec sum = bits + IntVec(0x7FFF) + lsb;
  const IntVec rounded =
      high ? sum & IntVec(static_cast<int32_t>(0xFFFF0000u)) : shift_right_16(sum);
  const IntVec nan(high ? 0x7FC00000 : 0x7FC0);
#if defined(CPU_CAPABILITY_AVX512)
  // (a mask register: at::vec's blendv would widen the compare to a vector and back)
  return _mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), nan);
#else
  return IntVec::blendv(rounded, nan, at::vec::cast<int32_t>(x.isnan()));
#endif
}

YARN_ALWAYS_INLINE IntVec narrow_bf16(const FloatVec& even, const FloatVec& odd) {
  return round_to_bf16_bits<false>(even) | round_to_bf16_bits<true>(odd);
}

// rotate_half pairs; cos and sin in paired layout: per 2 * kSize features, the cos of the even
// features then the cos of the odd ones (make_paired_row).
template <bool inverse>
void rotate_half_pairs_bf16(const c10::BFloat16* in, c10::BFloat16* out, const float* cos,
                            const float* sin, int64_t half) {
  constexpr int64_t kSize = FloatVec::size();
  for (int64_t i = 0; i < half; i += 2 * kSize) {
    auto [a_even, a_odd] = widen_bf16(IntVec::loadu(in + i));
    auto [b_even, b_odd] = widen_bf16(IntVec::loadu(in + half + i));
    turn<inverse>(a_even, b_even, FloatVec::loadu(cos + i), FloatVec::loadu(sin + i));
    turn<inverse>(a_odd, b_odd, FloatVec::loadu(cos + i + kSize), FloatVec::loadu(sin + i + kSize));
    narrow_bf16(a_even, a_odd).store(out + i);
    narrow_bf16(b_even, b_odd).store(out + half + i);
  }
}

// interleaved pairs: one pair per 32-bit lane.
template <bool inverse>
void rotate_interleaved_pairs_bf16(const c10::BFloat16* in, c10::BFloat16* out, const float* cos,
                                   const float* sin, int64_t half) {
  constexpr int64_t kSize = FloatVec::size();
  for (int64_t i = 0; i < half; i += kSize) {
    auto [a, b] = widen_bf16(IntVec::loadu(in + 2 * i));
    turn<inverse>(a, b, FloatVec::loadu(cos + i), FloatVec::loadu(sin + i));
    narrow_bf16(a, b).store(out + 2 * i);
  }
}
#else
constexpr bool kBitBFloat16 = false;
#endif

// Whether rows of this dtype and style take the bit-operation bfloat16 loops, which need whole
// vectors: half a multiple of 2 * kSize (rotate_half) or kSize (interleaved) float lanes.
template <typename scalar_t>
bool bit_bf16_path(bool interleaved, int64_t half) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16> && kBitBFloat16) {
    constexpr int64_t kSize = at::vec::Vectorized<float>::size();
    return half % (interleaved ? kSize : 2 * kSize) == 0;
  }
  return false;
}

// A cos/sin row in paired layout for rotate_half_pairs_bf16: each run of 2 * kSize values split
// into its even-indexed values then its odd-indexed ones.
inline void make_paired_row(const float* row, float* paired, int64_t half) {
  using Vec = at::vec::Vectorized<float>;
  constexpr int64_t kSize = Vec::size();
  for (int64_t i = 0; i < 2 * half; i += 2 * kSize) {  // cos and sin alike
    const auto [even, odd] =
        at::vec::deinterleave2(Vec::loadu(row + i), Vec::loadu(row + i + kSize));
    even.store(paired + i);
    odd.store(paired + i + kSize);
  }
}

struct RowGeometry {
  int64_t half;
  int64_t head_size;
  int64_t in_stride;  // of the last dimension
  int64_t out_stride;
  bool copy_pass;  // out of place: the features past the rotary dim are copied
  bool bit_bf16;   // bfloat16 through the bit-operation loops (cos/sin rows paired for rotate_half)
};

// The rotary pairs of one head vector with unit element stride.
template <typename scalar_t, bool interleaved, bool inverse>
void rotate_contiguous(const scalar_t* in, scalar_t* out, const acc_type<scalar_t>* cos,
                       const acc_type<scalar_t>* sin, const RowGeometry& g) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    if (g.bit_bf16) {
      if constexpr (interleaved) {
        rotate_interleaved_pairs_bf16<inverse>(in, out, cos, sin, g.half);
      } else {
        rotate_half_pairs_bf16<inverse>(in, out, cos, sin, g.half);
      }
      return;
    }
  }
#endif
  if constexpr (interleaved) {
    rotate_interleaved_pairs<scalar_t, inverse>(in, out, cos, sin, g.half);
  } else {
    rotate_half_pairs<scalar_t, inverse>(in, out, cos, sin, g.half);
  }
}

// One head vector. The vector path needs a unit element stride; a strided last dimension
// (x[..., ::2], or a head dimension transposed behind the sequence) goes through the shared
// scalar pair code - no model we know of produces one.
template <typename scalar_t, bool interleaved, bool inverse>
void rotate_row(const scalar_t* in, scalar_t* out, const acc_type<scalar_t>* cos_sin,
                const RowGeometry& g) {
  using acc_t = acc_type<scalar_t>;
  const acc_t* cos = cos_sin;
  const acc_t* sin = cos_sin + g.half;
  if (g.in_stride == 1 && g.out_stride == 1) {
    rotate_contiguous<scalar_t, interleaved, inverse>(in, out, cos, sin, g);
    if (g.copy_pass) {
      std::memcpy(out + 2 * g.half, in + 2 * g.half, (g.head_size - 2 * g.half) * sizeof(scalar_t));
    }
    return;
  }
  for (int64_t i = 0; i < g.half; ++i) {
    const acc_t s = inverse ? -sin[i] : sin[i];
    rotation::rotate_pairs<scalar_t, acc_t, 1, interleaved>(in, out, g.in_stride, g.out_stride, i,
                                                            g.half, cos + i, &s);
  }
  if (g.copy_pass) {
    for (int64_t d = 2 * g.half; d < g.head_size; ++d) {
      rotation::copy_features<scalar_t, 1>(in, out, g.in_stride, g.out_stride, d);
    }
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace yarn_ext::cpu

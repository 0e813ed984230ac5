// rotate_store_kv's normalize-and-rotate loop for the AVX512_BF16 copy (CPU_CAPABILITY_AVX512_BF16,
// compiled with -mavx512bf16): each bfloat16 rounding of a unit of 32 values is one conversion
// instruction (vcvtne2ps2bf16, to nearest even) and its widening back two bit operations, where the
// integer rounding of the other copies takes five operations a vector.
//
// The conversion differs from c10's rounding in two cases: it flushes a denormal input to zero
// (c10 rounds it to a bfloat16 denormal), and it keeps a NaN's payload (c10 writes 0x7FC0). The
// loop runs only where neither can arise - checked once per call (the norm's scales), per token
// (its cos/sin row) and per group of heads (their values), all outside the loop - so its bits are
// the other loops' bits; any other head takes the Lanes loop, which reads the same unpaired
// cos/sin rows and plain scales.
#pragma once

#include <cstdint>

#if defined(CPU_CAPABILITY_AVX512_BF16)
#if !defined(__AVX512BF16__)
#error "the AVX512_BF16 copy is compiled with -mavx512bf16 (csrc/library.json)"
#endif
#include <immintrin.h>

#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>

#include <utility>

#include "cpu/vectorized/rotate_row.h"
#endif

namespace yarn_ext::cpu {
namespace CPU_CAPABILITY {

#if defined(CPU_CAPABILITY_AVX512_BF16)
// Slots. A unit of 32 values is a pair of float vectors (lo, hi): slot s < 16 is lo's lane s,
// slot s >= 16 is hi's lane s - 16. The conversion packs slot s into 16-bit word s; widen_bf16
// unpacks word 2j into lo's lane j and word 2j + 1 into hi's lane j. So a rounding (pack, then
// widen) moves into slot s what slot unpacked_from(s) held, and packed_at undoes it.
constexpr int kUnit = 32;
constexpr int unpacked_from(int s) {
  return s < kUnit / 2 ? 2 * s : 2 * (s - kUnit / 2) + 1;
}
constexpr int packed_at(int w) {
  return w % 2 == 0 ? w / 2 : kUnit / 2 + w / 2;
}

// Where each value of a unit is (slot -> its index in the unit) when the pair turns: rotate_half's
// a and b units in index order, an interleaved unit's pairs split (lo: 2j, hi: 2j + 1), as the
// cos/sin row's plain layout and turn want them.
constexpr int turn_slot_value(bool interleaved, int s) {
  return interleaved ? unpacked_from(s) : s;
}

// Word permutations (word w of the result takes word index[w] of its source).
struct WordIndex {
  alignas(64) int16_t word[kUnit];
};

// The gather of a loaded unit so that, after widening and `roundings` more roundings, its values
// are in turn order: every rounding moves them by unpacked_from, so the load undoes all of them.
constexpr WordIndex load_index(bool interleaved, int roundings) {
  WordIndex index{};
  for (int w = 0; w < kUnit; ++w) {
    int s = w;
    for (int r = 0; r <= roundings; ++r) s = packed_at(s);
    index.word[w] = static_cast<int16_t>(turn_slot_value(interleaved, s));
  }
  return index;
}

// The gather of a packed result into memory order (interleaved units: their split pairs merged).
constexpr WordIndex store_index() {
  WordIndex index{};
  for (int w = 0; w < kUnit; ++w) index.word[w] = static_cast<int16_t>(packed_at(w));
  return index;
}

// Loads gathered for Qwen3's norm (two roundings before the turn: x * inverse_rms, then the
// weight) and Qwen3.5's (one), by style.
inline constexpr WordIndex kLoadRotateHalf[2] = {load_index(false, 2), load_index(false, 1)};
inline constexpr WordIndex kLoadInterleaved[2] = {load_index(true, 2), load_index(true, 1)};
inline constexpr WordIndex kStoreInterleaved = store_index();

// A norm's scales (norm_scale's, in index order) laid out as the loop multiplies by them: in
// either norm the weight meets the values one rounding before the turn, in slot order
// turn_slot_value o packed_at. Made once per call; n is a whole number of units.
inline void lay_out_scales(const float* scale, int64_t n, bool interleaved, float* laid_out) {
  for (int64_t unit = 0; unit < n; unit += kUnit) {
    for (int s = 0; s < kUnit; ++s) {
      laid_out[unit + s] = scale[unit + turn_slot_value(interleaved, packed_at(s))];
    }
  }
}

// Whether every value of v[0, n) is zero or has a magnitude in [low, high] (a NaN is not). The
// bounds below keep every rounding's input a normal float or zero and every result finite:
//  - a head's x * inverse_rms: at least 2^-20 (heads_in_range);
//  - the scales (1 + weight too): zero or in [2^-20, 2^20]; so the normalized values, the
//    rotation's inputs, are zero or in [2^-42, 2^26] (|x| * inverse_rms <= sqrt(n) <= 2^5 once
//    the sum of squares is finite, and a rounding's margin);
//  - the cos/sin row: zero or in [2^-60, 2^20]; so each product of the turn is zero or in
//    [2^-102, 2^46], and the difference of two such floats, a multiple of 2^-125, is zero or
//    normal, and finite.
inline bool magnitudes_in_range(const float* v, int64_t n, float low, float high) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512 lowest = _mm512_set1_ps(low);
  const __m512 highest = _mm512_set1_ps(high);
  __mmask16 out = 0;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = n - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 magnitude = _mm512_abs_ps(_mm512_maskz_loadu_ps(lanes, v + i));
    const __mmask16 nonzero = _mm512_cmp_ps_mask(magnitude, zero, _CMP_NEQ_UQ);
    out |= _mm512_mask_cmp_ps_mask(nonzero, magnitude, lowest, _CMP_LT_OQ) |
           _mm512_cmp_ps_mask(magnitude, highest, _CMP_NLE_UQ);
  }
  return out == 0;
}

inline bool scales_in_range(const float* scale, int64_t n) {
  return magnitudes_in_range(scale, n, 0x1p-20f, 0x1p20f);
}

inline bool cos_sin_in_range(const float* row, int64_t half) {
  return magnitudes_in_range(row, 2 * half, 0x1p-60f, 0x1p20f);
}

// The lanes' lesser values (the least square of each lane, sum_of_squares_bf16): no NaN to care
// for, as a head with one has a NaN sum of squares, which heads_in_range refuses.
inline FloatVec least_of(const FloatVec& a, const FloatVec& b) {
  return _mm512_min_ps(a, b);
}

// Whether each of a group's 16 heads, normalized, stays where the conversion rounds as c10 does
// (in_range[h]), from its inverse_rms and least square (x^2 of its value nearest zero): least
// square * inverse_rms^2 >= 2^-38, so that every |x| * inverse_rms >= 2^-20 (with room for this
// check's roundings). That also refuses a head with a NaN or an infinity, or squares that
// overflow: its sum of squares is a NaN or infinite, its inverse_rms a NaN or 0, and the product
// a NaN or 0; and one whose inverse_rms is infinite (eps 0 and a sum of 0: its least square is
// 0, the product a NaN). So a head passes only with a finite sum, which bounds each normalized
// value by sqrt(n). A head with a zero value takes the Lanes loop.
// (One vector of 16 lanes: kv_store.h's kNormGroup.)
inline void heads_in_range(const float* inverse, const float* least, bool* in_range) {
  const __m512 rms_inverse = _mm512_loadu_ps(inverse);
  const __m512 least_normalized =
      _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(least), rms_inverse), rms_inverse);
  const unsigned heads = _mm512_cmp_ps_mask(least_normalized, _mm512_set1_ps(0x1p-38f), _CMP_GE_OQ);
  for (int h = 0; h < 16; ++h) in_range[h] = (heads >> h) & 1u;
}

// Rounded to bfloat16 and widened back, as a unit's slots move (unpacked_from).
YARN_ALWAYS_INLINE std::pair<FloatVec, FloatVec> convert_round(const FloatVec& lo,
                                                               const FloatVec& hi) {
  return widen_bf16(IntVec(reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo))));
}

// norm_rotate_row (one head, normalized and rotated, into `out`, which may be `in`) for a head in
// range: loads gathered (kLoad*), `scale` laid out by lay_out_scales, the cos/sin row unpaired.
// Whole units only (kv_store_bit_path's condition).
template <bool interleaved>
void norm_rotate_row_convert(const c10::BFloat16* in, c10::BFloat16* out, const float* scale,
                             float inverse_rms, bool unit_offset, const float* cos_sin,
                             int64_t half, int64_t head_size) {
  const FloatVec inverse(inverse_rms);
  const float* cos = cos_sin;
  const float* sin = cos_sin + half;
  const WordIndex& load = (interleaved ? kLoadInterleaved : kLoadRotateHalf)[unit_offset ? 1 : 0];
  const __m512i gather = _mm512_load_si512(load.word);
  // A unit normalized as the model's module leaves it, in turn order.
  auto norm = [&](int64_t at) YARN_ALWAYS_INLINE_LAMBDA {
    const auto [lo, hi] =
        widen_bf16(IntVec(_mm512_permutexvar_epi16(gather, _mm512_loadu_si512(in + at))));
    const FloatVec w_lo = FloatVec::loadu(scale + at);
    const FloatVec w_hi = FloatVec::loadu(scale + at + kUnit / 2);
    if (unit_offset) return convert_round(lo * inverse * w_lo, hi * inverse * w_hi);
    const auto [y_lo, y_hi] = convert_round(lo * inverse, hi * inverse);
    return convert_round(w_lo * y_lo, w_hi * y_hi);
  };
  auto store = [&](int64_t at, const FloatVec& lo, const FloatVec& hi) YARN_ALWAYS_INLINE_LAMBDA {
    __m512i packed = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
    if constexpr (interleaved) {
      packed = _mm512_permutexvar_epi16(_mm512_load_si512(kStoreInterleaved.word), packed);
    }
    _mm512_storeu_si512(out + at, packed);
  };
  constexpr int64_t kHalfUnit = kUnit / 2;
  if constexpr (interleaved) {  // a unit: 16 pairs, split
    for (int64_t i = 0; i < 2 * half; i += kUnit) {
      auto [a, b] = norm(i);
      turn<false>(a, b, FloatVec::loadu(cos + i / 2), FloatVec::loadu(sin + i / 2));
      store(i, a, b);
    }
  } else {  // a unit of a's and the unit of b's half a head further
    for (int64_t i = 0; i < half; i += kUnit) {
      auto [a_lo, a_hi] = norm(i);
      auto [b_lo, b_hi] = norm(half + i);
      turn<false>(a_lo, b_lo, FloatVec::loadu(cos + i), FloatVec::loadu(sin + i));
      turn<false>(a_hi, b_hi, FloatVec::loadu(cos + i + kHalfUnit),
                  FloatVec::loadu(sin + i + kHalfUnit));
      store(i, a_lo, a_hi);
      store(half + i, b_lo, b_hi);
    }
  }
  for (int64_t i = 2 * half; i < head_size; i += kUnit) {
    const auto [lo, hi] = norm(i);
    store(i, lo, hi);
  }
}
#endif

}  // namespace CPU_CAPABILITY
}  // namespace yarn_ext::cpu

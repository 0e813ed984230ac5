// The CUDA kernel of rotate_store_kv as the work of one thread, torch-free and host+device: the
// kernel (cuda/kv_store_kernel.cu) runs it for every thread of its grid, and the CPU test hook
// (testing/cuda_emulation.cpp) for every thread in turn, a row's lanes together (their first
// steps, then their second), so that the CPU tests run the GPU's arithmetic and index math where
// no GPU is at hand.
//
// kLanes consecutive threads share a row of a token: a head of q or of k (RMSNorm, rotation, the
// store: q in place, k into the cache and, with write_k, back into k) or of v (copied into the
// cache), each lane every kLanes-th vector of it. The rows of a token follow each other - q's
// heads, k's, v's - so a warp reads and writes whole heads side by side, in whole 32-byte
// sectors (float32's sum of squares: in two loads that share each sector). A
// thread's work is two steps: its part of the head's sum of squares (row_part), which only
// reads; the parts folded among the row's lanes (fold_lanes: warp shuffles on the GPU); then the
// normalized, rotated values of its vectors (rotate_store_row), which reads them again (from L1)
// and stores them.
//
// The arithmetic is the CPU kernel's (cpu/vectorized/kv_store.h), operation for operation, so
// that the devices agree bit for bit: the sum of squares in the same order (32 running sums,
// value i into sum i % 32, then folded pairwise; a lane holds 8 of them), each product and sum
// rounded on its own, the dtype roundings the model's module makes, and rotation::rotate_pair's
// turn.
//
// Slots: a slot outside [-1, num_blocks * block_size) is never written on the device (the CPU
// kernel refuses it before any write). Its token's k and v rows are skipped, as padding's are,
// and counted into the optional counter layout.invalid_slots: once per token, by the first lane
// of its first k head (a call whose k has no heads stores nothing, and counts nothing).
#pragma once

#include <stdint.h>

#include "kv_store_layout.h"
#include "yarn_ext/core/cos_sin_run.h"
#include "yarn_ext/core/macros.h"
#include "yarn_ext/core/rotation.h"

#include <torch/headeronly/util/BFloat16.h>

#include <type_traits>

#if defined(__CUDA_ARCH__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#else
#include <torch/headeronly/util/Float8_e4m3fn.h>

#include <cmath>
#include <cstring>
#endif

namespace yarn_ext::kv_store {

// The fp8 cache's element (float8_e4m3fn), one byte.
struct Fp8 {
  uint8_t bits;
};

// Correctly rounded division and square root: nvcc's defaults are too, but the intrinsics say
// so whatever the flags.
#if defined(__CUDA_ARCH__)
YARN_HOST_DEVICE inline float div_rn(float a, float b) {
  return __fdiv_rn(a, b);
}
YARN_HOST_DEVICE inline float sqrt_rn(float a) {
  return __fsqrt_rn(a);
}
#else
inline float div_rn(float a, float b) {
  return a / b;
}
inline float sqrt_rn(float a) {
  return std::sqrt(a);
}
#endif

// A float8 cache's scale, prepared once per row for fp8_quotient.
struct Fp8Scale {
  float k;        // 1, or 2^64 / 2^-64 for a scale below 2^-60 / above 2^64
  float scale;    // scale * k
  float inverse;  // 1 / (scale * k), correctly rounded
};

YARN_HOST_DEVICE inline Fp8Scale fp8_scale(float scale) {
  const float magnitude = scale < 0 ? -scale : scale;
  const float k = magnitude < 0x1p-60f ? 0x1p64f : (magnitude > 0x1p64f ? 0x1p-64f : 1.0f);
  const float scaled = rotation::mul_rn(scale, k);
  return {k, scaled, div_rn(1.0f, scaled)};
}

// x / scale as float8 sees it: the quotient the CPU kernel's division gives, up to what the
// float8 conversion cannot tell apart (the sign of a zero kept; values below 2^-11, or beyond
// 448, alike). Without a division: a division's slow path is a call, which would keep the
// loop's registers on the stack. The quotient q = x * (1 / scale), then corrected by its exact
// remainder (Markstein: with 1 / scale correctly rounded, q + (x - q * scale) / scale rounds
// as x / scale does while nothing under- or overflows; the scale's factor k keeps the
// reciprocal and the remainder in range where the quotient matters to float8). An infinite or
// NaN q (x infinite or NaN, a zero scale) and an infinite scale (reciprocal zero) keep q, which
// is then the quotient. Checked against the division on 2e8 random operands.
YARN_HOST_DEVICE inline float fp8_quotient(float x, const Fp8Scale& d) {
  const float xk = rotation::mul_rn(x, d.k);
  const float q = rotation::mul_rn(xk, d.inverse);
#if defined(__CUDA_ARCH__)
  const float remainder = fmaf(-q, d.scale, xk);
  const float corrected = copysignf(fmaf(remainder, d.inverse, q), q);
  const bool finite = fabsf(q) < __int_as_float(0x7f800000);
#else
  const float remainder = std::fma(-q, d.scale, xk);
  const float corrected = std::copysign(std::fma(remainder, d.inverse, q), q);
  const bool finite = std::fabs(q) < HUGE_VALF;
#endif
  return finite && d.inverse != 0.0f ? corrected : q;
}

// float8_e4m3fn as vLLM stores a KV cache: x / scale, saturated to +-448 (an infinity too); a
// NaN stays a NaN. Rounded to nearest even, as the CPU kernel's c10 conversion rounds; on the GPU
// a pair per conversion.
template <int kVec>
YARN_HOST_DEVICE inline void to_fp8(const float (&v)[kVec], const Fp8Scale& scale,
                                    Fp8 (&out)[kVec]) {
  float q[kVec];
  YARN_UNROLL
  for (int j = 0; j < kVec; ++j) q[j] = fp8_quotient(v[j], scale);
#if defined(__CUDA_ARCH__)
  if constexpr (kVec % 2 == 0) {
    YARN_UNROLL
    for (int i = 0; i < kVec / 2; ++i) {
      const __nv_fp8x2_storage_t pair =
          __nv_cvt_float2_to_fp8x2(make_float2(q[2 * i], q[2 * i + 1]), __NV_SATFINITE, __NV_E4M3);
      out[2 * i] = {static_cast<uint8_t>(pair & 0xff)};
      out[2 * i + 1] = {static_cast<uint8_t>(pair >> 8)};
    }
  } else {
    out[0] = {static_cast<uint8_t>(__nv_cvt_float_to_fp8(q[0], __NV_SATFINITE, __NV_E4M3))};
  }
#else
  constexpr float kMax = 448.0f;
  for (int j = 0; j < kVec; ++j) {
    const float clamped =
        std::isnan(q[j]) ? q[j] : (q[j] > kMax ? kMax : (q[j] < -kMax ? -kMax : q[j]));
    out[j] = {c10::Float8_e4m3fn(clamped).x};
  }
#endif
}

// A float from its bits, and back.
YARN_HOST_DEVICE inline float float_from_bits(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
#endif
}

template <typename scalar_t>
constexpr bool kIsBFloat16 = std::is_same_v<scalar_t, c10::BFloat16>;

// kVec values of scalar_t at p, widened to float. bfloat16 pairs by bit operations on their
// 32 bits (the low value shifted up, the high one masked): one instruction a value.
template <typename scalar_t, int kVec>
YARN_HOST_DEVICE inline void load_floats(const scalar_t* p, float (&out)[kVec]) {
  if constexpr (kIsBFloat16<scalar_t> && kVec % 2 == 0) {
    uint32_t bits[kVec / 2];
#if defined(__CUDA_ARCH__)
    rotation::load<kVec / 2>(reinterpret_cast<const uint32_t*>(p), bits);
#else
    std::memcpy(bits, p, sizeof bits);
#endif
    YARN_UNROLL
    for (int i = 0; i < kVec / 2; ++i) {
      out[2 * i] = float_from_bits(bits[i] << 16);
      out[2 * i + 1] = float_from_bits(bits[i] & 0xffff0000u);
    }
  } else {
    scalar_t x[kVec];
    rotation::load<kVec>(p, x);
    YARN_UNROLL
    for (int j = 0; j < kVec; ++j) out[j] = static_cast<float>(x[j]);
  }
}

// kVec floats rounded to scalar_t, to nearest even (nvcc packs pairs of them into one
// conversion).
template <typename scalar_t, int kVec>
YARN_HOST_DEVICE inline void to_scalars(const float (&v)[kVec], scalar_t (&y)[kVec]) {
  YARN_UNROLL
  for (int j = 0; j < kVec; ++j) y[j] = static_cast<scalar_t>(v[j]);
}

// kVec values of scalar_t widened to float (exactly); bfloat16 by a shift.
template <typename scalar_t, int kVec>
YARN_HOST_DEVICE inline void to_floats(const scalar_t (&y)[kVec], float (&v)[kVec]) {
  YARN_UNROLL
  for (int j = 0; j < kVec; ++j) {
    if constexpr (kIsBFloat16<scalar_t>) {
      v[j] = float_from_bits(static_cast<uint32_t>(y[j].x) << 16);
    } else {
      v[j] = static_cast<float>(y[j]);
    }
  }
}

// Values rounded to scalar_t and widened back (the `.to(input_dtype)` between a module's float32
// steps), to nearest even. On the GPU a pair per conversion, widened back by bit operations
// on the pair's 32 bits.
template <typename scalar_t, int kVec>
YARN_HOST_DEVICE inline void round_floats(float (&v)[kVec]) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return;
  }
#if defined(__CUDA_ARCH__)
  else if constexpr (kVec % 2 == 0) {
    YARN_UNROLL
    for (int i = 0; i < kVec / 2; ++i) {
      if constexpr (kIsBFloat16<scalar_t>) {
        const __nv_bfloat162 r = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
        const uint32_t bits = reinterpret_cast<const uint32_t&>(r);
        v[2 * i] = float_from_bits(bits << 16);
        v[2 * i + 1] = float_from_bits(bits & 0xffff0000u);
      } else {
        const float2 r = __half22float2(__floats2half2_rn(v[2 * i], v[2 * i + 1]));
        v[2 * i] = r.x;
        v[2 * i + 1] = r.y;
      }
    }
  }
#endif
  else {
    scalar_t y[kVec];
    to_scalars(v, y);
    to_floats(y, v);
  }
}

// A row's lanes: kLanes consecutive threads of a warp share a row (a head of q, k or v), each
// taking every kLanes-th vector of it. A warp's load then reads 32 / kLanes heads side by side,
// in whole 32-byte sectors where a lane's vectors are 16 bytes (a thread per head would touch 32
// heads' rows, half a sector each, per load), and a head's sum of squares splits into kLanes exact
// parts (below).
constexpr int kLanes = 4;
constexpr int kSums = 32;                  // the CPU kernel's running sums of squares
constexpr int kLaneSums = kSums / kLanes;  // of them, a lane's
static_assert(kLanes == 4 && kLaneSums == 8, "the folds below are written for 4 lanes of 8 sums");

// The part of a row's sum of squares (its n values) that lane `lane` holds, in the CPU kernel's
// order: the CPU adds value i to running sum i % 32, in index order, then folds the 32 sums
// pairwise (sum 2j + sum 2j + 1), five times. Lane l keeps sums [8 l, 8 l + 8) - the values
// 32 m + 8 l + j - and makes the first three folds, which stay within its sums; fold_lanes makes
// the last two across the lanes. kVec values a load; the sums' indices are constants (the loops
// unroll), so they stay in registers.
template <typename scalar_t, int kVec>
YARN_HOST_DEVICE inline float lane_sum_of_squares(const scalar_t* in, int n, int lane) {
  static_assert(kLaneSums % kVec == 0);
  float sums[kLaneSums];
  YARN_UNROLL
  for (int j = 0; j < kLaneSums; ++j) sums[j] = 0.0f;
  // Adds the kVec values at in + at to sums [c * kVec, (c + 1) * kVec).
  auto add = [&](int at, int c) {
    float x[kVec];
    load_floats<scalar_t, kVec>(in + at, x);
    YARN_UNROLL
    for (int j = 0; j < kVec; ++j) {
      sums[c * kVec + j] = rotation::add_rn(sums[c * kVec + j], rotation::mul_rn(x[j], x[j]));
    }
  };
  const int groups = n / kSums;  // whole groups of 32 values, then the tail
  const int offset = lane * kLaneSums;
  YARN_NO_UNROLL
  for (int g = 0; g < groups; ++g) {
    YARN_UNROLL
    for (int c = 0; c < kLaneSums / kVec; ++c) add(g * kSums + offset + c * kVec, c);
  }
  // the tail (a row's length is a multiple of kVec: whole loads, and none past its end)
  const int tail = groups * kSums + offset;
  YARN_UNROLL
  for (int c = 0; c < kLaneSums / kVec; ++c) {
    if (tail + c * kVec < n) add(tail + c * kVec, c);
  }
  // (loops with constant bounds: a loop over the width would index the sums at run time, which
  // puts them in local memory on the GPU)
  YARN_UNROLL
  for (int j = 0; j < 4; ++j) sums[j] = rotation::add_rn(sums[2 * j], sums[2 * j + 1]);
  YARN_UNROLL
  for (int j = 0; j < 2; ++j) sums[j] = rotation::add_rn(sums[2 * j], sums[2 * j + 1]);
  return rotation::add_rn(sums[0], sums[1]);
}

// The row's sum of squares from its lanes' parts: the CPU's last two folds, (lane 0 + lane 1) +
// (lane 2 + lane 3), as a butterfly that leaves the sum in every lane (in each lane's operand
// order, which does not change a sum's bits). On the GPU by shuffles among the row's lanes
// (`lanes`: their mask in the warp); the CPU emulation passes every lane's part.
#if defined(__CUDACC__)
__device__ inline float fold_lanes(float part, unsigned lanes) {
  part = rotation::add_rn(part, __shfl_xor_sync(lanes, part, 1));
  return rotation::add_rn(part, __shfl_xor_sync(lanes, part, 2));
}
#endif
YARN_HOST_DEVICE inline float fold_lanes(const float (&parts)[kLanes], int lane) {
  float pairs[kLanes];
  YARN_UNROLL
  for (int l = 0; l < kLanes; ++l) pairs[l] = rotation::add_rn(parts[l], parts[l ^ 1]);
  return rotation::add_rn(pairs[lane], pairs[lane ^ 2]);
}

// 1 / sqrt(mean of squares + eps) of a row of n values whose sum of squares is `sum`, each step
// rounded as torch's float32 steps round.
YARN_HOST_DEVICE inline float inverse_rms(float sum, int n, float eps) {
  const float mean = div_rn(sum, static_cast<float>(n));
  return div_rn(1.0f, sqrt_rn(rotation::add_rn(mean, eps)));
}

// How a head is normalized: not at all; Qwen3's RMSNorm (x * inverse_rms rounded to the dtype,
// times the weight, rounded); Qwen3.5's (x * inverse_rms * (1 + weight) in float32, rounded).
// A template argument: each kind has a loop of its own, with no choice per element.
enum class NormKind { kNone, kWeight, kUnitOffset };

// kVec values of a head as the model's module leaves them, given the head's inverse_rms and the
// features' weights w (both unused for kNone).
template <NormKind kind, typename scalar_t, int kVec>
YARN_HOST_DEVICE inline void normalize(float (&v)[kVec], const float (&w)[kVec], float inverse) {
  if constexpr (kind == NormKind::kUnitOffset) {
    YARN_UNROLL
    for (int j = 0; j < kVec; ++j) {
      const float scale = rotation::add_rn(1.0f, w[j]);
      v[j] = rotation::mul_rn(rotation::mul_rn(v[j], inverse), scale);
    }
    round_floats<scalar_t>(v);
  } else if constexpr (kind == NormKind::kWeight) {
    YARN_UNROLL
    for (int j = 0; j < kVec; ++j) v[j] = rotation::mul_rn(v[j], inverse);
    round_floats<scalar_t>(v);
    YARN_UNROLL
    for (int j = 0; j < kVec; ++j) v[j] = rotation::mul_rn(w[j], v[j]);
    round_floats<scalar_t>(v);
  }
}

// kVec values of a head at element `at`, loaded and normalized.
template <NormKind kind, typename scalar_t, int kVec>
YARN_HOST_DEVICE inline void load_normalized(const scalar_t* in, const scalar_t* weight, int at,
                                             float inverse, float (&v)[kVec]) {
  load_floats<scalar_t, kVec>(in + at, v);
  if constexpr (kind != NormKind::kNone) {
    float w[kVec];
    load_floats<scalar_t, kVec>(weight + at, w);
    normalize<kind, scalar_t>(v, w, inverse);
  }
}

// Where a q or k head's values go: `out` (the row itself, or k) and, unless null, a cache row
// of scalar_t or (kFp8) of float8_e4m3fn, divided by `scale`.
template <typename scalar_t>
struct RowTargets {
  scalar_t* out;   // nullptr: none
  void* cache;     // nullptr: none
  Fp8Scale scale;  // fp8 only
};

// kVec values stored at element `at` of each target.
template <bool kFp8, typename scalar_t, int kVec>
YARN_HOST_DEVICE inline void store_values(const RowTargets<scalar_t>& targets, int64_t at,
                                          const scalar_t (&y)[kVec]) {
  if (targets.out != nullptr) rotation::store<kVec>(targets.out + at, y);
  if (targets.cache == nullptr) return;
  if constexpr (kFp8) {
    float values[kVec];
    to_floats(y, values);
    Fp8 bytes[kVec];
    to_fp8(values, targets.scale, bytes);
    rotation::store<kVec>(static_cast<Fp8*>(targets.cache) + at, bytes);
  } else {
    rotation::store<kVec>(static_cast<scalar_t*>(targets.cache) + at, y);
  }
}

// A token's positions, read once per head: t, and h and w for MRoPE (equal to t otherwise).
struct TokenPosition {
  int64_t t, h, w;
};

YARN_HOST_DEVICE inline TokenPosition token_position(const KvStoreLayout& layout, int64_t token) {
  const int64_t offset = token * layout.position_stride;
  const int64_t t = position_at(layout.positions, layout.int32_positions, offset);
  if (!layout.tables.mrope.enabled) return {t, t, t};
  const int64_t stride = layout.tables.mrope.component_stride;
  return {t, position_at(layout.positions, layout.int32_positions, offset + stride),
          position_at(layout.positions, layout.int32_positions, offset + 2 * stride)};
}

// A lane's rotated pairs of one q or k head (every kLanes-th item), the loop of one norm kind
// and cache type: normalized, rotated, stored to the targets. kCached: the token's position has a
// row in the cos/sin cache (and the token's MRoPE positions are equal): the loop reads the cache
// only, and calls nothing (a call would have the kernel keep its registers on the stack around it).
template <NormKind kind, bool kFp8, bool kCached, typename scalar_t, int kVec, bool interleaved>
YARN_HOST_DEVICE inline void norm_rotate_pairs(const scalar_t* in, const scalar_t* weight,
                                               const RowTargets<scalar_t>& targets,
                                               const KvStoreLayout& layout, TokenPosition p,
                                               float inverse, int lane) {
  using Runs = rotation::PairRuns<scalar_t, kVec, interleaved>;
  const int half = static_cast<int>(layout.tables.half);
  YARN_NO_UNROLL
  for (int first = lane * kVec; first < half; first += kLanes * kVec) {
    float x[2][kVec];
    load_normalized<kind>(in, weight, static_cast<int>(Runs::start(0, first, half)), inverse, x[0]);
    load_normalized<kind>(in, weight, static_cast<int>(Runs::start(1, first, half)), inverse, x[1]);
    // Half the item's pairs at a time, with their cos/sin: all of them at once would hold 2 *
    // kVec floats of cos/sin beside the values, and spill.
    constexpr int kPart = kVec > 1 ? kVec / 2 : 1;
    YARN_UNROLL
    for (int part = 0; part < kVec / kPart; ++part) {
      const CosSinRun<float, kPart> cs =
          kCached ? cache_cos_sin<kPart>(layout.tables, p.t, first + part * kPart)
                  : forward_mrope_cos_sin<float, kPart>(layout.tables, p.t, p.h, p.w,
                                                        first + part * kPart);
      YARN_UNROLL
      for (int i = 0; i < kPart; ++i) {
        const int j = part * kPart + i;
        const int ra = Runs::a(j) / kVec, ia = Runs::a(j) % kVec;
        const int rb = Runs::b(j) / kVec, ib = Runs::b(j) % kVec;
        rotation::rotate_pair(x[ra][ia], x[rb][ib], cs.cos[i], cs.sin[i]);
      }
    }
    scalar_t y[2][kVec];
    to_scalars(x[0], y[0]);
    to_scalars(x[1], y[1]);
    store_values<kFp8>(targets, Runs::start(0, first, half), y[0]);
    store_values<kFp8>(targets, Runs::start(1, first, half), y[1]);
  }
}

// A lane's part of one q or k head, the loops of one norm kind and cache type: normalized,
// rotated, stored to the targets. `sum` is the head's sum of squares (its lanes' parts folded),
// `in` may be targets.out: each lane writes only what it reads here.
template <NormKind kind, bool kFp8, typename scalar_t, int kVec, bool interleaved>
YARN_HOST_DEVICE inline void norm_rotate_head(const scalar_t* in, const scalar_t* weight,
                                              const RowTargets<scalar_t>& targets,
                                              const KvStoreLayout& layout, TokenPosition p,
                                              float sum, int lane) {
  const int half = static_cast<int>(layout.tables.half);
  const int head_size = static_cast<int>(layout.head_size);  // at most kKvMaxHeadSize
  float inverse = 0.0f;
  if constexpr (kind != NormKind::kNone) inverse = inverse_rms(sum, head_size, layout.eps);
  if (p.t == p.h && p.t == p.w && cached<float>(layout.tables, p.t)) {
    norm_rotate_pairs<kind, kFp8, true, scalar_t, kVec, interleaved>(in, weight, targets, layout, p,
                                                                     inverse, lane);
  } else {
    norm_rotate_pairs<kind, kFp8, false, scalar_t, kVec, interleaved>(in, weight, targets, layout,
                                                                      p, inverse, lane);
  }
  // Past the rotary dim (partial rotary): normalized only.
  YARN_NO_UNROLL
  for (int at = 2 * half + lane * kVec; at < head_size; at += kLanes * kVec) {
    float x[kVec];
    load_normalized<kind>(in, weight, at, inverse, x);
    scalar_t y[kVec];
    to_scalars(x, y);
    store_values<kFp8>(targets, at, y);
  }
}

// The same, its loops chosen by the head's norm (weight, unit_offset) and the cache's type.
template <bool kFp8, typename scalar_t, int kVec, bool interleaved>
YARN_HOST_DEVICE inline void norm_rotate_head(const scalar_t* in, const scalar_t* weight,
                                              const RowTargets<scalar_t>& targets,
                                              const KvStoreLayout& layout, TokenPosition p,
                                              float sum, int lane) {
  if (weight == nullptr) {
    norm_rotate_head<NormKind::kNone, kFp8, scalar_t, kVec, interleaved>(in, weight, targets,
                                                                         layout, p, sum, lane);
  } else if (layout.unit_offset) {
    norm_rotate_head<NormKind::kUnitOffset, kFp8, scalar_t, kVec, interleaved>(
        in, weight, targets, layout, p, sum, lane);
  } else {
    norm_rotate_head<NormKind::kWeight, kFp8, scalar_t, kVec, interleaved>(in, weight, targets,
                                                                           layout, p, sum, lane);
  }
}

// A lane's part of a v head (every kLanes-th vector): copied (or quantized) into its cache row.
template <bool kFp8, typename scalar_t, int kVec>
YARN_HOST_DEVICE inline void store_v_head(const scalar_t* in, const RowTargets<scalar_t>& targets,
                                          int n, int lane) {
  YARN_NO_UNROLL
  for (int at = lane * kVec; at < n; at += kLanes * kVec) {
    scalar_t x[kVec];
    rotation::load<kVec>(in + at, x);
    store_values<kFp8>(targets, at, x);
  }
}

YARN_HOST_DEVICE inline int64_t slot_of(const KvStoreLayout& layout, int64_t token) {
  const int64_t offset = token * layout.slot_stride;
  return layout.int32_slots ? static_cast<const int32_t*>(layout.slots)[offset]
                            : static_cast<const int64_t*>(layout.slots)[offset];
}

// Row `head` of the cache at `slot` (in range), of `element_size`-byte elements.
YARN_HOST_DEVICE inline void* cache_row(const PagedCache& cache, int64_t block_size, int64_t slot,
                                        int64_t head, int64_t head_size, int64_t element_size) {
  // In 32 bits where the slot allows (every cache below 2^32 slots): a 64-bit division is a
  // call of some seventy instructions on the GPU.
  const bool narrow = static_cast<uint64_t>(slot | block_size) <= 0xffffffffu;
  const int64_t block =
      narrow ? static_cast<uint32_t>(slot) / static_cast<uint32_t>(block_size) : slot / block_size;
  const int64_t row = slot - block * block_size;
  return static_cast<char*>(cache.data) +
         (block * cache.block_stride + row * cache.slot_stride + head * head_size) * element_size;
}

// Rows a token has: q's heads, k's, v's.
YARN_HOST_DEVICE inline int64_t rows_per_token(const KvStoreLayout& layout) {
  return layout.q.num_heads + layout.k.num_heads + layout.v.num_heads;
}

// The q or k head of row `row` (< q's heads + k's) of token `token`; then its norm weight
// (nullptr: none).
template <typename scalar_t>
YARN_HOST_DEVICE inline scalar_t* head_of(const KvStoreLayout& layout, int64_t token, int64_t row) {
  const bool is_q = row < layout.q.num_heads;
  const TokenHeads& heads = is_q ? layout.q : layout.k;
  const int64_t head = is_q ? row : row - layout.q.num_heads;
  return static_cast<scalar_t*>(heads.data) + token * heads.token_stride + head * heads.head_stride;
}

template <typename scalar_t>
YARN_HOST_DEVICE inline const scalar_t* weight_of(const KvStoreLayout& layout, int64_t row) {
  return static_cast<const scalar_t*>(row < layout.q.num_heads ? layout.q_weight : layout.k_weight);
}

// Whether row `row` is a head with a norm: a q or k head whose norm weight is given.
YARN_HOST_DEVICE inline bool has_norm(const KvStoreLayout& layout, int64_t row) {
  return row < layout.q.num_heads + layout.k.num_heads && weight_of<void>(layout, row) != nullptr;
}

// The first step of lane `lane` on row `row` of token `token`, which only reads: its part of
// the head's sum of squares (lane_sum_of_squares) where the row has a norm, 0 elsewhere. Every
// lane's part is taken before any lane of the row writes (on the GPU a __syncwarp of the row's
// lanes after the fold), so a head normalized in place is read whole first: a lane writes values
// that another lane summed (float32's vectors, NeoX with half not a multiple of 32).
template <typename scalar_t, int kVec>
YARN_HOST_DEVICE inline float row_part(const KvStoreLayout& layout, int64_t token, int64_t row,
                                       int lane) {
  if (!has_norm(layout, row)) return 0.0f;
  return lane_sum_of_squares<scalar_t, kVec>(head_of<scalar_t>(layout, token, row),
                                             static_cast<int>(layout.head_size), lane);
}

// The second step of lane `lane` on row `row` of token `token`, given the row's sum of squares
// `sum` (unused where the row has no norm). layout.invalid_slots, unless null, counts the tokens
// whose slot is outside [-1, num_blocks * block_size) (their k and v are not stored).
template <typename scalar_t, int kVec, bool interleaved>
YARN_HOST_DEVICE inline void rotate_store_row(const KvStoreLayout& layout, int64_t token,
                                              int64_t row, int lane, float sum) {
  const int64_t q_heads = layout.q.num_heads;
  const int64_t k_heads = layout.k.num_heads;
  if (row < q_heads) {
    scalar_t* q = head_of<scalar_t>(layout, token, row);
    norm_rotate_head<false, scalar_t, kVec, interleaved>(q, weight_of<scalar_t>(layout, row),
                                                         {q, nullptr, {}}, layout,
                                                         token_position(layout, token), sum, lane);
    return;
  }
  const int64_t slot = slot_of(layout, token);
  const int64_t num_slots = layout.num_blocks * layout.block_size;
  // One unsigned comparison: -1 and every other negative slot become huge.
  const bool stored = static_cast<uint64_t>(slot) < static_cast<uint64_t>(num_slots);
  const int64_t element_size = layout.fp8 ? 1 : static_cast<int64_t>(sizeof(scalar_t));
  if (row < q_heads + k_heads) {
    const int64_t head = row - q_heads;
    if (head == 0 && lane == 0 && slot != -1 && !stored && layout.invalid_slots != nullptr) {
#if defined(__CUDA_ARCH__)
      atomicAdd(layout.invalid_slots, 1);
#else
      ++*layout.invalid_slots;
#endif
    }
    if (!stored && !layout.write_k) return;
    scalar_t* k = head_of<scalar_t>(layout, token, row);
    RowTargets<scalar_t> targets{layout.write_k ? k : nullptr, nullptr,
                                 layout.fp8 ? fp8_scale(*layout.k_scale) : Fp8Scale{}};
    if (stored) {
      targets.cache =
          cache_row(layout.k_cache, layout.block_size, slot, head, layout.head_size, element_size);
    }
    const scalar_t* weight = weight_of<scalar_t>(layout, row);
    const TokenPosition p = token_position(layout, token);
    if (layout.fp8) {
      norm_rotate_head<true, scalar_t, kVec, interleaved>(k, weight, targets, layout, p, sum, lane);
    } else {
      norm_rotate_head<false, scalar_t, kVec, interleaved>(k, weight, targets, layout, p, sum,
                                                           lane);
    }
    return;
  }
  if (!stored) return;
  const int64_t head = row - q_heads - k_heads;
  const auto* v = static_cast<const scalar_t*>(layout.v.data) + token * layout.v.token_stride +
                  head * layout.v.head_stride;
  const RowTargets<scalar_t> targets{
      nullptr,
      cache_row(layout.v_cache, layout.block_size, slot, head, layout.v_head_size, element_size),
      layout.fp8 ? fp8_scale(*layout.v_scale) : Fp8Scale{}};
  const int n = static_cast<int>(layout.v_head_size);
  if (layout.fp8) {
    store_v_head<true, scalar_t, kVec>(v, targets, n, lane);
  } else {
    store_v_head<false, scalar_t, kVec>(v, targets, n, lane);
  }
}

// The launch: blocks of at most kThreads threads, (rows' lanes, tokens) - block_x lanes of
// block_y tokens - and a grid of (token blocks, lane slices). A token's lanes are block_x
// consecutive threads unless it has more than kThreads of them; block_x is a multiple of kLanes,
// so a row's lanes are kLanes consecutive threads of one warp.
constexpr int kThreads = 256;

// In 64 bits: the launcher refuses a grid past CUDA's limits (fits_cuda_grid) before casting.
struct KvStoreLaunch {
  int64_t grid_x;
  int64_t grid_y;
  int64_t block_x;
  int64_t block_y;

  YARN_HOST_DEVICE bool fits_cuda_grid() const {
    return grid_x <= int64_t{0x7fffffff} && grid_y <= 65535;
  }
};

// No rows (q, k and v without heads) or no tokens: an empty grid, which the launcher skips.
// A token with more than kThreads lanes is cut into equal slices (a multiple of kLanes each),
// not into full blocks and a nearly idle last one: 80 rows are two slices of 160 lanes, not 256
// and 64.
YARN_HOST_DEVICE inline KvStoreLaunch kv_store_launch(const KvStoreLayout& layout) {
  const int64_t lanes = rows_per_token(layout) * kLanes;
  if (lanes == 0 || layout.num_tokens == 0) return {0, 0, 0, 0};
  const int64_t slices = (lanes + kThreads - 1) / kThreads;
  const int64_t slice = (lanes + slices - 1) / slices;
  const int64_t block_x = (slice + kLanes - 1) / kLanes * kLanes;  // at most kThreads
  const int64_t block_y = kThreads / block_x;
  return {(layout.num_tokens + block_y - 1) / block_y, (lanes + block_x - 1) / block_x, block_x,
          block_y};
}

// What thread (thread_x, thread_y) of block (block_x, block_y) in kv_store_launch works on: lane
// `lane` of row `row` of token `token`; nothing unless `active` (the same for a row's lanes).
struct ThreadRow {
  int64_t token;
  int64_t row;
  int lane;
  bool active;
};

YARN_HOST_DEVICE inline ThreadRow thread_row(const KvStoreLayout& layout, uint32_t block_x,
                                             uint32_t block_y, uint32_t thread_x, uint32_t thread_y,
                                             uint32_t threads_x, uint32_t threads_y) {
  const int64_t token = int64_t{block_x} * threads_y + thread_y;
  const int64_t lanes = int64_t{block_y} * threads_x + thread_x;
  const int64_t row = lanes / kLanes;
  return {token, row, static_cast<int>(lanes % kLanes),
          token < layout.num_tokens && row < rows_per_token(layout)};
}

// The mask of a row's lanes in their warp, for the thread at `linear` (threadIdx.y * blockDim.x +
// threadIdx.x) in its block: kLanes consecutive threads from a multiple of kLanes, as block_x
// is one.
YARN_HOST_DEVICE inline unsigned row_lanes_mask(uint32_t linear) {
  return ((1u << kLanes) - 1u) << ((linear % 32) & ~(kLanes - 1u));
}

#if defined(__CUDACC__)
// The work of a GPU thread: its part of the row's sum of squares, the parts folded among the
// row's lanes by shuffles, then its values.
template <typename scalar_t, int kVec, bool interleaved>
__device__ inline void rotate_store_thread(const KvStoreLayout& layout) {
  const ThreadRow t =
      thread_row(layout, blockIdx.x, blockIdx.y, threadIdx.x, threadIdx.y, blockDim.x, blockDim.y);
  if (!t.active) return;  // with the rest of its row's lanes
  const float part = row_part<scalar_t, kVec>(layout, t.token, t.row, t.lane);
  float sum = 0.0f;
  if (has_norm(layout, t.row)) {  // the same for the row's lanes
    const unsigned lanes = row_lanes_mask(threadIdx.y * blockDim.x + threadIdx.x);
    sum = fold_lanes(part, lanes);
    // Every lane's reads of the head done before any lane's writes (rows normalized in place):
    // the shuffled sum's data dependency orders them in practice, this says so in CUDA's model.
    __syncwarp(lanes);
  }
  rotate_store_row<scalar_t, kVec, interleaved>(layout, t.token, t.row, t.lane, sum);
}
#endif

}  // namespace yarn_ext::kv_store

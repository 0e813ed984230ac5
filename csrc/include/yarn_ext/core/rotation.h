// The rotation itself, torch-free and host+device: which features form a pair, how a pair turns,
// and the unit of work every kernel is built from - kVec consecutive pairs of one row. The CPU
// kernels run it with kVec = 1 (any element stride); the CUDA kernels with kVec = 1 or, on the
// vector path (element stride 1, 16-byte aligned rows), with 16-byte loads and stores.
// Arithmetic is in acc_t (float32, or float64 for float64 inputs); each output is rounded once.
#pragma once

#include <stdint.h>

#include "yarn_ext/core/macros.h"

namespace yarn_ext::rotation {
YARN_ISA_NAMESPACE_BEGIN

// Products and sums that round on their own. The CPU kernels compile with -ffp-contract=off;
// nvcc contracts a * b - c * d into an fma by default, and where it does so depends on the
// instantiation. The intrinsics keep every product and sum separate on the GPU, so that the CPU
// and every CUDA instantiation give the same bits (the static report, benchmarks/sass.py, fails
// on an FFMA in the rotation).
#if defined(__CUDA_ARCH__)
YARN_HOST_DEVICE inline float mul_rn(float a, float b) {
  return __fmul_rn(a, b);
}
YARN_HOST_DEVICE inline double mul_rn(double a, double b) {
  return __dmul_rn(a, b);
}
YARN_HOST_DEVICE inline float add_rn(float a, float b) {
  return __fadd_rn(a, b);
}
YARN_HOST_DEVICE inline double add_rn(double a, double b) {
  return __dadd_rn(a, b);
}
YARN_HOST_DEVICE inline float sub_rn(float a, float b) {
  return __fsub_rn(a, b);
}
YARN_HOST_DEVICE inline double sub_rn(double a, double b) {
  return __dsub_rn(a, b);
}
#else
template <typename T>
inline T mul_rn(T a, T b) {
  return a * b;
}
template <typename T>
inline T add_rn(T a, T b) {
  return a + b;
}
template <typename T>
inline T sub_rn(T a, T b) {
  return a - b;
}
#endif

// y_a = x_a cos - x_b sin, y_b = x_b cos + x_a sin, each product and sum rounded once, as the
// CPU's vectors compute it. The inverse rotation is the same with -sin.
template <typename T>
YARN_HOST_DEVICE inline void rotate_pair(T& a, T& b, T cos, T sin) {
  const T rotated_a = sub_rn(mul_rn(a, cos), mul_rn(b, sin));
  const T rotated_b = add_rn(mul_rn(b, cos), mul_rn(a, sin));
  a = rotated_a;
  b = rotated_b;
}

template <typename T, int N>
struct alignas(sizeof(T) * N) Vector {
  T values[N];
};

// kVec elements starting at p: one (16-byte) vector access when kVec > 1, where the element
// stride is 1; a plain access with any stride when kVec == 1.
template <int kVec, typename T>
YARN_HOST_DEVICE inline void load(const T* p, T (&dst)[kVec]) {
  if constexpr (kVec == 1) {
    dst[0] = *p;
  } else {
    const Vector<T, kVec> v = *reinterpret_cast<const Vector<T, kVec>*>(p);
    YARN_UNROLL
    for (int j = 0; j < kVec; ++j) dst[j] = v.values[j];
  }
}

template <int kVec, typename T>
YARN_HOST_DEVICE inline void store(T* p, const T (&src)[kVec]) {
  if constexpr (kVec == 1) {
    *p = src[0];
  } else {
    Vector<T, kVec> v;
    YARN_UNROLL
    for (int j = 0; j < kVec; ++j) v.values[j] = src[j];
    *reinterpret_cast<Vector<T, kVec>*>(p) = v;
  }
}

// The kVec pairs [first, first + kVec) of one row, as loaded: two runs of kVec elements, at
// (first.., first + half..) for the NeoX / rotate_half style (Zeta, transformers: feature i pairs
// with i + half) and the 2 * kVec consecutive elements from 2 * first for the GPT-J style
// (interleaved: 2i pairs with 2i + 1). The style is a template argument so that every register
// index below is a compile-time constant (a runtime choice puts the arrays in local memory on
// the GPU).
template <typename scalar_t, int kVec, bool interleaved>
struct PairRuns {
  scalar_t x[2][kVec];

  YARN_HOST_DEVICE static int64_t start(int run, int64_t first, int64_t half) {
    if (interleaved) return 2 * first + run * kVec;
    return first + run * half;
  }
  // Element e of the two runs is x[e / kVec][e % kVec]; pair j is elements (a(j), b(j)).
  YARN_HOST_DEVICE static constexpr int a(int j) { return interleaved ? 2 * j : j; }
  YARN_HOST_DEVICE static constexpr int b(int j) { return interleaved ? 2 * j + 1 : j + kVec; }
};

template <typename scalar_t, int kVec, bool interleaved>
YARN_HOST_DEVICE inline PairRuns<scalar_t, kVec, interleaved> load_pairs(const scalar_t* in,
                                                                         int64_t in_stride,
                                                                         int64_t first,
                                                                         int64_t half) {
  using Runs = PairRuns<scalar_t, kVec, interleaved>;
  Runs runs;
  load<kVec>(in + Runs::start(0, first, half) * in_stride, runs.x[0]);
  load<kVec>(in + Runs::start(1, first, half) * in_stride, runs.x[1]);
  return runs;
}

// Rotates loaded pairs with cos[j], sin[j] for pair first + j and stores them. `out` may be the
// row they were loaded from.
template <typename acc_t, typename scalar_t, int kVec, bool interleaved>
YARN_HOST_DEVICE inline void store_rotated(const PairRuns<scalar_t, kVec, interleaved>& runs,
                                           scalar_t* out, int64_t out_stride, int64_t first,
                                           int64_t half, const acc_t* cos, const acc_t* sin) {
  using Runs = PairRuns<scalar_t, kVec, interleaved>;
  scalar_t y[2][kVec];
  YARN_UNROLL
  for (int j = 0; j < kVec; ++j) {
    acc_t a = static_cast<acc_t>(runs.x[Runs::a(j) / kVec][Runs::a(j) % kVec]);
    acc_t b = static_cast<acc_t>(runs.x[Runs::b(j) / kVec][Runs::b(j) % kVec]);
    rotate_pair(a, b, cos[j], sin[j]);
    y[Runs::a(j) / kVec][Runs::a(j) % kVec] = static_cast<scalar_t>(a);
    y[Runs::b(j) / kVec][Runs::b(j) % kVec] = static_cast<scalar_t>(b);
  }
  store<kVec>(out + Runs::start(0, first, half) * out_stride, y[0]);
  store<kVec>(out + Runs::start(1, first, half) * out_stride, y[1]);
}

// Rotates pairs [first, first + kVec) of one row: load, rotate, store.
template <typename scalar_t, typename acc_t, int kVec, bool interleaved>
YARN_HOST_DEVICE inline void rotate_pairs(const scalar_t* in, scalar_t* out, int64_t in_stride,
                                          int64_t out_stride, int64_t first, int64_t half,
                                          const acc_t* cos, const acc_t* sin) {
  store_rotated<acc_t>(load_pairs<scalar_t, kVec, interleaved>(in, in_stride, first, half), out,
                       out_stride, first, half, cos, sin);
}

// Copies kVec features starting at element `first` (the pass-through part of partial rotary).
template <typename scalar_t, int kVec>
YARN_HOST_DEVICE inline void copy_features(const scalar_t* in, scalar_t* out, int64_t in_stride,
                                           int64_t out_stride, int64_t first) {
  scalar_t x[kVec];
  load<kVec>(in + first * in_stride, x);
  store<kVec>(out + first * out_stride, x);
}

YARN_ISA_NAMESPACE_END
}  // namespace yarn_ext::rotation

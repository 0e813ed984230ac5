// The rotation itself, torch-free and host+device: which features form a pair, how a pair turns,
// and the unit of work every kernel is built from - kVec consecutive pairs of one row. The CPU
// kernels run it with kVec = 1 (any element stride); the CUDA kernels with kVec = 1 or, on the
// vector path (element stride 1, 16-byte aligned rows), with 16-byte loads and stores.
// Arithmetic is in acc_t (float32, or float64 for float64 inputs); each output is rounded once.
#pragma once

#include <stdint.h>

#include "yarn_ext/core/macros.h"

namespace yarn_ext::rotation {

// y_a = x_a cos - x_b sin, y_b = x_b cos + x_a sin. The inverse rotation is the same with -sin.
template <typename T>
YARN_HOST_DEVICE inline void rotate_pair(T& a, T& b, T cos, T sin) {
  const T rotated_a = a * cos - b * sin;
  const T rotated_b = b * cos + a * sin;
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

// Rotates pairs [first, first + kVec) of one row (a head vector). NeoX / rotate_half style
// (Zeta, transformers) pairs feature i with i + half; GPT-J style (interleaved) pairs 2i with
// 2i + 1. cos[j] and sin[j] belong to pair first + j. `in` and `out` may be the same row.
// The style is a template argument so that every register index below is a compile-time
// constant (a runtime choice would put x and y in local memory on the GPU).
template <typename scalar_t, typename acc_t, int kVec, bool interleaved>
YARN_HOST_DEVICE inline void rotate_pairs(const scalar_t* in, scalar_t* out, int64_t in_stride,
                                          int64_t out_stride, int64_t first, int64_t half,
                                          const acc_t* cos, const acc_t* sin) {
  // Two runs of kVec elements hold the kVec pairs: (first.., first + half..) for NeoX, and the
  // 2 * kVec consecutive elements from 2 * first for GPT-J.
  const int64_t run_a = interleaved ? 2 * first : first;
  const int64_t run_b = interleaved ? 2 * first + kVec : first + half;
  scalar_t x[2][kVec];
  load<kVec>(in + run_a * in_stride, x[0]);
  load<kVec>(in + run_b * in_stride, x[1]);
  scalar_t y[2][kVec];
  YARN_UNROLL
  for (int j = 0; j < kVec; ++j) {
    // element e of the run pair is x[e / kVec][e % kVec]
    const int ea = interleaved ? 2 * j : j;
    const int eb = interleaved ? 2 * j + 1 : j + kVec;
    acc_t a = static_cast<acc_t>(x[ea / kVec][ea % kVec]);
    acc_t b = static_cast<acc_t>(x[eb / kVec][eb % kVec]);
    rotate_pair(a, b, cos[j], sin[j]);
    y[ea / kVec][ea % kVec] = static_cast<scalar_t>(a);
    y[eb / kVec][eb % kVec] = static_cast<scalar_t>(b);
  }
  store<kVec>(out + run_a * out_stride, y[0]);
  store<kVec>(out + run_b * out_stride, y[1]);
}

// Copies kVec features starting at element `first` (the pass-through part of partial rotary).
template <typename scalar_t, int kVec>
YARN_HOST_DEVICE inline void copy_features(const scalar_t* in, scalar_t* out, int64_t in_stride,
                                           int64_t out_stride, int64_t first) {
  scalar_t x[kVec];
  load<kVec>(in + first * in_stride, x);
  store<kVec>(out + first * out_stride, x);
}

}  // namespace yarn_ext::rotation

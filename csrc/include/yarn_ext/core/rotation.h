// The rotation itself, torch-free and host+device: which features form a pair, and how a pair
// turns. Kernels accumulate in float32 (float64 for float64 inputs) and round once on the store.
#pragma once

#include <stdint.h>

#include "yarn_ext/core/macros.h"

namespace yarn_ext::rotation {

struct PairIndex {
  int64_t a;
  int64_t b;
};

// NeoX / rotate_half style (Zeta, transformers) pairs feature i with i + half; GPT-J style
// (interleaved) pairs 2i with 2i + 1. Frequency i drives pair i in both.
YARN_HOST_DEVICE inline PairIndex rotary_pair(int64_t i, int64_t half, bool interleaved) {
  return interleaved ? PairIndex{2 * i, 2 * i + 1} : PairIndex{i, i + half};
}

// y_a = x_a cos - x_b sin, y_b = x_b cos + x_a sin. The inverse rotation is the same with -sin.
template <typename T>
YARN_HOST_DEVICE inline void rotate_pair(T& a, T& b, T cos, T sin) {
  const T rotated_a = a * cos - b * sin;
  const T rotated_b = b * cos + a * sin;
  a = rotated_a;
  b = rotated_b;
}

}  // namespace yarn_ext::rotation

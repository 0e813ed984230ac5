// Maps a flat row number to element offsets in several strided tensors at once. A "row" is one
// head vector (the last dimension); the rows are everything in front of it, in row-major order.
// Torch-free and host+device so that every kernel shares the index arithmetic (and the CPU tests
// exercise the same code the GPU runs).
#pragma once

#include <stdint.h>

#include "yarn_ext/core/macros.h"

namespace yarn_ext {

// Row dimensions left after size-1 dimensions are dropped and mergeable ones coalesced; real
// tensors need two or three.
constexpr int kMaxRowDims = 12;

template <int kOperands>
struct StridedRows {
  int ndim = 0;
  int64_t sizes[kMaxRowDims] = {};
  int64_t strides[kOperands][kMaxRowDims] = {};

  // Offsets (in elements) of row `row` in each operand. 64-bit throughout.
  YARN_HOST_DEVICE void offsets(int64_t row, int64_t (&out)[kOperands]) const {
    for (int op = 0; op < kOperands; ++op) out[op] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t index = row % sizes[d];
      row /= sizes[d];
      for (int op = 0; op < kOperands; ++op) out[op] += index * strides[op][d];
    }
  }
};

}  // namespace yarn_ext

// Builds the StridedRows layout of a rotation from ATen tensors (host side, shared by backends).
#pragma once

#include <ATen/core/Tensor.h>

#include "yarn_ext/core/rotate_work.h"

namespace yarn_ext::detail {

// Rows of `input` and `output` (same shape) and of `positions` (already expanded to
// input.shape[:-1]). With positions undefined, the positions slot gets stride 1 along dim -2 and
// 0 elsewhere, so a row's "positions offset" is its index along dim -2: the implicit position.
// Size-1 dimensions are dropped and dimensions that are contiguous for every operand merged; a
// layout that still has more than kMaxRowDims dimensions is rejected (naming `name`), which is
// why every kernel builds its layouts before it writes anything.
RotationRows rotation_rows(const char* op, const char* name, const at::Tensor& input,
                           const at::Tensor& output, const at::Tensor& positions);

// Number of rows (head vectors) of x.
inline int64_t num_rows(const at::Tensor& x) {
  return x.size(-1) == 0 ? 0 : x.numel() / x.size(-1);
}

}  // namespace yarn_ext::detail

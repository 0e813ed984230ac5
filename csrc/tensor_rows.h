// Builds the StridedRows layout of a rotation from tensors (host side, shared by backends).
#pragma once

#include <cstdint>

#include "checks.h"
#include "yarn_ext/core/rotate_work.h"

namespace yarn_ext::detail {

// Rows of `input` and `output` (same shape) and of the positions, whose strides along
// input.shape[:-1] are `position_strides` (0 along broadcast dimensions), or nullptr for implicit
// positions: then the positions slot gets stride 1 along dim -2 and 0 elsewhere, so a row's
// "positions offset" is its index along dim -2. Size-1 dimensions are dropped and dimensions that
// are contiguous for every operand merged; a layout that still has more than kMaxRowDims
// dimensions is rejected (naming `name`), which is why every kernel builds its layouts before it
// writes anything. yarn_ext/_validation.py (check_row_layout) mirrors the rejection.
RotationRows rotation_rows(const char* op, const char* name, const TensorMeta& input,
                           const TensorMeta& output, const int64_t* position_strides);

}  // namespace yarn_ext::detail

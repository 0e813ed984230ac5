#include "tensor_rows.h"

#include <array>
#include <vector>

namespace yarn_ext::detail {

RotationRows rotation_rows(const char* op, const char* name, const TensorMeta& input,
                           const TensorMeta& output, const int64_t* position_strides) {
  using Strides = std::array<int64_t, kNumRotationOperands>;
  const int64_t row_dims = input.dim - 1;
  // Walk from the innermost row dimension outwards, merging into the current innermost kept
  // dimension whenever every operand steps through the outer one contiguously.
  // Room for every dimension a tensor can have in practice, so that the message counts what is
  // left after merging, as yarn_ext/_validation.py does.
  constexpr int kRoom = 64;
  int64_t sizes[kRoom];
  Strides strides[kRoom];
  int kept = 0;
  for (int64_t d = row_dims - 1; d >= 0; --d) {
    const int64_t size = input.sizes[d];
    if (size == 1) continue;
    const Strides s = {
        input.stride(d), output.stride(d),
        position_strides != nullptr ? position_strides[d] : (d == row_dims - 1 ? 1 : 0)};
    if (kept > 0) {
      bool mergeable = true;
      for (int op_index = 0; op_index < kNumRotationOperands; ++op_index) {
        mergeable = mergeable && s[op_index] == strides[kept - 1][op_index] * sizes[kept - 1];
      }
      if (mergeable) {
        sizes[kept - 1] *= size;
        continue;
      }
    }
    YARN_CHECK(kept < kRoom, op, "the layout of ", name, " has more than ", kRoom,
               " row dimensions");
    sizes[kept] = size;
    strides[kept] = s;
    ++kept;
  }
  YARN_CHECK(kept <= kMaxRowDims, op, "the layout of ", name, " has ", kept,
             " row dimensions that cannot be merged; at most ", kMaxRowDims,
             " are supported (pass ", name, ".contiguous())");
  // `sizes` runs innermost-first; StridedRows wants outermost-first.
  RotationRows rows;
  rows.ndim = kept;
  for (int i = 0; i < kept; ++i) {
    rows.sizes[i] = sizes[kept - 1 - i];
    for (int op_index = 0; op_index < kNumRotationOperands; ++op_index) {
      rows.strides[op_index][i] = strides[kept - 1 - i][op_index];
    }
  }
  return rows;
}

}  // namespace yarn_ext::detail

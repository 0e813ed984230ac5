#include "tensor_rows.h"

#include <c10/util/Exception.h>

namespace yarn_ext::detail {

RotationRows rotation_rows(const at::Tensor& input, const at::Tensor& output,
                           const at::Tensor& positions) {
  const int64_t row_dims = input.dim() - 1;
  RotationRows rows;
  // Walk from the innermost row dimension outwards, merging into the current innermost kept
  // dimension whenever every operand steps through the outer one contiguously.
  int kept = 0;
  int64_t sizes[64];
  int64_t strides[kNumRotationOperands][64];
  TORCH_CHECK_VALUE(row_dims <= 64,
                    "yarn_ext: tensors with more than 65 dimensions are not supported");
  for (int64_t d = row_dims - 1; d >= 0; --d) {
    const int64_t size = input.size(d);
    if (size == 1) continue;
    int64_t s[kNumRotationOperands] = {
        input.stride(d), output.stride(d),
        positions.defined() ? positions.stride(d) : (d == row_dims - 1 ? 1 : 0)};
    if (kept > 0) {
      const int inner = kept - 1;
      bool mergeable = true;
      for (int op = 0; op < kNumRotationOperands; ++op) {
        mergeable = mergeable && s[op] == strides[op][inner] * sizes[inner];
      }
      if (mergeable) {
        sizes[inner] *= size;
        continue;
      }
    }
    sizes[kept] = size;
    for (int op = 0; op < kNumRotationOperands; ++op) strides[op][kept] = s[op];
    ++kept;
  }
  TORCH_CHECK_VALUE(kept <= kMaxRowDims, "yarn_ext: the layout of the input has ", kept,
                    " dimensions that cannot be merged; at most ", kMaxRowDims,
                    " are supported (make it contiguous)");
  // `kept` runs innermost-first; StridedRows wants outermost-first.
  rows.ndim = kept;
  for (int i = 0; i < kept; ++i) {
    rows.sizes[i] = sizes[kept - 1 - i];
    for (int op = 0; op < kNumRotationOperands; ++op) {
      rows.strides[op][i] = strides[op][kept - 1 - i];
    }
  }
  return rows;
}

}  // namespace yarn_ext::detail

#include "tensor_rows.h"

#include <c10/util/Exception.h>
#include <c10/util/SmallVector.h>

#include <array>

namespace yarn_ext::detail {

RotationRows rotation_rows(const char* op, const char* name, const at::Tensor& input,
                           const at::Tensor& output, const at::Tensor& positions) {
  using Strides = std::array<int64_t, kNumRotationOperands>;
  const int64_t row_dims = input.dim() - 1;
  // Walk from the innermost row dimension outwards, merging into the current innermost kept
  // dimension whenever every operand steps through the outer one contiguously.
  c10::SmallVector<int64_t, kMaxRowDims> sizes;
  c10::SmallVector<Strides, kMaxRowDims> strides;
  for (int64_t d = row_dims - 1; d >= 0; --d) {
    const int64_t size = input.size(d);
    if (size == 1) continue;
    const Strides s = {input.stride(d), output.stride(d),
                       positions.defined() ? positions.stride(d) : (d == row_dims - 1 ? 1 : 0)};
    if (!sizes.empty()) {
      bool mergeable = true;
      for (int op_index = 0; op_index < kNumRotationOperands; ++op_index) {
        mergeable = mergeable && s[op_index] == strides.back()[op_index] * sizes.back();
      }
      if (mergeable) {
        sizes.back() *= size;
        continue;
      }
    }
    sizes.push_back(size);
    strides.push_back(s);
  }
  const int kept = static_cast<int>(sizes.size());
  TORCH_CHECK_VALUE(kept <= kMaxRowDims, op, ": the layout of ", name, " has ", kept,
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

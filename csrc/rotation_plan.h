// Validation and layout of a rotation call, shared by the CPU and CUDA kernels: each operator
// rejects the same inputs with the same messages, and in-place calls validate everything -
// layouts included - before anything is written. A planned task is plain data (pointers, sizes,
// the row layout), so that the kernels make no further calls into torch.
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "checks.h"
#include "tensor_rows.h"
#include "yarn_ext/core/cos_sin_run.h"

namespace yarn_ext::detail {

// One tensor to rotate.
struct RotationTask {
  torch::stable::Tensor output;  // the tensor written: a new one, or the input for in place
  const void* in;
  void* out;
  const void* positions;  // nullptr: implicit positions
  bool int32_positions;
  Dtype dtype;
  int64_t head_size;  // size of the last dimension
  int64_t num_rows;   // head vectors
  int64_t in_stride;  // element strides of the last dimension
  int64_t out_stride;
  RotationRows rows;
  bool in_place;

  int64_t element_size() const { return detail::element_size(dtype); }
};

// An operator's MRoPE arguments: the sections (absent: plain RoPE) and their style.
struct MropeSection {
  const std::optional<std::vector<int64_t>>& sections;
  bool interleaved;
};

// yarn_ext::rotate: validates, allocates the output (empty_like(x)), builds the layout.
RotationTask plan_rotate(const char* op, const torch::stable::Tensor& x,
                         const torch::stable::Tensor& cos_sin_cache,
                         const torch::stable::Tensor& inv_freq, double mscale,
                         const std::optional<torch::stable::Tensor>& positions,
                         const MropeSection& mrope, CosSinTables* tables);

struct InplaceRotation {
  RotationTask q;
  std::optional<RotationTask> k;
};

// yarn_ext::rotate_inplace: validates q, k, positions and both layouts; writes nothing.
InplaceRotation plan_rotate_inplace(const char* op, const torch::stable::Tensor& q,
                                    const std::optional<torch::stable::Tensor>& k,
                                    const torch::stable::Tensor& cos_sin_cache,
                                    const torch::stable::Tensor& inv_freq, double mscale,
                                    const std::optional<torch::stable::Tensor>& positions,
                                    const MropeSection& mrope, CosSinTables* tables);

}  // namespace yarn_ext::detail

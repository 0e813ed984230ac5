// Validation and layout of a rotation call, shared by every backend's kernels (CPU, Meta, CUDA):
// each operator rejects the same inputs with the same messages, and in-place calls validate
// everything - layouts included - before anything is written.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "tensor_rows.h"

namespace yarn_ext::detail {

// One tensor to rotate.
struct RotationTask {
  at::Tensor input;
  at::Tensor output;     // input itself for in-place rotation
  at::Tensor positions;  // expanded to input.shape[:-1], or undefined: implicit positions
  RotationRows rows;
};

// yarn_ext::rotate: validates, allocates the output (at::empty_like(x)), builds the layout.
// With symbolic shapes (Meta kernels under dynamic-shape tracing) the layout is left empty and
// only the shape checks run (checks.h).
RotationTask plan_rotate(const char* op, const at::Tensor& x, const at::Tensor& cos_sin_cache,
                         const at::Tensor& inv_freq, double mscale,
                         const std::optional<at::Tensor>& positions);

struct InplaceRotation {
  RotationTask q;
  std::optional<RotationTask> k;
};

// yarn_ext::rotate_inplace: validates q, k, positions and both layouts; writes nothing.
InplaceRotation plan_rotate_inplace(const char* op, const at::Tensor& q,
                                    const std::optional<at::Tensor>& k,
                                    const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq,
                                    double mscale, const std::optional<at::Tensor>& positions);

}  // namespace yarn_ext::detail

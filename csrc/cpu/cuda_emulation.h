// Test hooks: the CUDA rotation's work items (core/rotate_work.h) run serially on the CPU, with
// the same argument building and vector-path decision as the CUDA launcher, so that the CPU
// tests exercise the GPU's index arithmetic where no GPU is at hand. Not part of the API.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace yarn_ext::testing {

// Out of place; returns whether the 16-byte vector path was taken.
bool emulate_cuda_rotate(const at::Tensor& x, at::Tensor& out, const at::Tensor& cos_sin_cache,
                         const at::Tensor& inv_freq, double mscale,
                         const std::optional<at::Tensor>& positions, bool interleaved,
                         bool inverse);

// q and optional k in place, as one launch; returns whether the vector path was taken.
bool emulate_cuda_rotate_inplace(const at::Tensor& q, const std::optional<at::Tensor>& k,
                                 const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq,
                                 double mscale, const std::optional<at::Tensor>& positions,
                                 bool interleaved);

}  // namespace yarn_ext::testing

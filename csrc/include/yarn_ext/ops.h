// The yarn_ext operators for C++ callers. Each call goes through the dispatcher, so the CPU,
// CUDA, Meta and Autograd kernels registered for yarn_ext:: all serve it.
//
// Tables: `inv_freq` is float64 [dim / 2]; `cos_sin_cache` is float32 [positions, dim] holding
// mscale * cos in columns [0, dim/2) and mscale * sin in [dim/2, dim), row p for position p.
// Positions outside the cache (negative or too large) are computed on the fly from inv_freq.
#pragma once

#include "yarn_ext/library_anchor.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace yarn_ext {

at::Tensor build_cos_sin_cache(const at::Tensor& inv_freq, int64_t num_positions, double mscale);

// x [..., S, D] with D >= dim: returns x with its first dim features rotated. positions (int32 or
// int64) broadcasts against x.shape[:-1]; without it, row s along dim -2 gets position s.
// inverse = true rotates by -angle: the transpose of the forward (both scale by mscale), which is
// its gradient. Differentiable (twice and more) with respect to x.
at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq,
                  double mscale, const std::optional<at::Tensor>& positions = std::nullopt,
                  bool interleaved = false, bool inverse = false);

// Rotates q and, when given, k in place in one call. Everything is validated before anything is
// written, so a call that throws has changed nothing.
void rotate_inplace(at::Tensor& q, const std::optional<at::Tensor>& k,
                    const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq, double mscale,
                    const std::optional<at::Tensor>& positions = std::nullopt,
                    bool interleaved = false);

}  // namespace yarn_ext

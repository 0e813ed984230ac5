// Meta kernels: shapes and dtypes only, for FakeTensor tracing (torch.compile, torch.export).
// They run the same validation as the real kernels so that tracing rejects what eager rejects.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <optional>

#include "checks.h"

namespace yarn_ext::meta {
namespace {

at::Tensor build_cos_sin_cache_meta(const at::Tensor& inv_freq, c10::SymInt num_positions,
                                    double mscale) {
  constexpr const char* kOp = "yarn_ext.build_cos_sin_cache";
  const int64_t half = detail::check_inv_freq(kOp, inv_freq);
  detail::check_mscale(kOp, mscale);
  TORCH_SYM_CHECK(num_positions.sym_ge(0), kOp, ": num_positions must be >= 0");
  return at::empty_symint({std::move(num_positions), c10::SymInt(2 * half)},
                          inv_freq.options().dtype(at::kFloat));
}

at::Tensor rotate_meta(const at::Tensor& x, const at::Tensor& cos_sin_cache,
                       const at::Tensor& inv_freq, double mscale,
                       const std::optional<at::Tensor>& positions, bool /*interleaved*/) {
  constexpr const char* kOp = "yarn_ext.rotate";
  const int64_t half = detail::check_tables(kOp, cos_sin_cache, inv_freq, mscale);
  detail::check_rotated(kOp, "x", x, inv_freq, half);
  detail::broadcast_positions(kOp, positions, x, "x");
  return at::empty_like(x);
}

void rotate_inplace_meta(const at::Tensor& q, const std::optional<at::Tensor>& k,
                         const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq, double mscale,
                         const std::optional<at::Tensor>& positions, bool /*interleaved*/) {
  constexpr const char* kOp = "yarn_ext.rotate_inplace";
  const int64_t half = detail::check_tables(kOp, cos_sin_cache, inv_freq, mscale);
  detail::check_rotated(kOp, "q", q, inv_freq, half);
  if (k.has_value() && k->defined()) {
    detail::check_rotated(kOp, "k", *k, inv_freq, half);
    detail::broadcast_positions(kOp, positions, *k, "k");
  }
  detail::check_inplace_pair(kOp, q, k);
  detail::broadcast_positions(kOp, positions, q, "q");
}

}  // namespace

TORCH_LIBRARY_IMPL(yarn_ext, Meta, m) {
  m.impl("build_cos_sin_cache", &build_cos_sin_cache_meta);
  m.impl("rotate", &rotate_meta);
  m.impl("rotate_inplace", &rotate_inplace_meta);
}

}  // namespace yarn_ext::meta

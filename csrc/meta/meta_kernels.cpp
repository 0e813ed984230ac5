// Meta kernels: shapes and dtypes only, for FakeTensor tracing (torch.compile, torch.export).
// They run the same validation as the real kernels so that tracing rejects what eager rejects.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>

#include "checks.h"
#include "rotation_plan.h"

namespace yarn_ext::meta {
namespace {

at::Tensor build_cos_sin_cache_meta(const at::Tensor& inv_freq, c10::SymInt num_positions,
                                    double mscale) {
  constexpr const char* kOp = "yarn_ext.build_cos_sin_cache";
  const c10::SymInt half = detail::check_inv_freq(kOp, inv_freq);
  detail::check_mscale(kOp, mscale);
  TORCH_CHECK_VALUE(num_positions >= 0, kOp, ": num_positions must be >= 0, got ", num_positions);
  return at::empty_symint({std::move(num_positions), half * 2},
                          inv_freq.options().dtype(at::kFloat));
}

at::Tensor rotate_meta(const at::Tensor& x, const at::Tensor& cos_sin_cache,
                       const at::Tensor& inv_freq, double mscale,
                       const std::optional<at::Tensor>& positions, bool /*interleaved*/,
                       bool /*inverse*/) {
  return detail::plan_rotate("yarn_ext.rotate", x, cos_sin_cache, inv_freq, mscale, positions)
      .output;
}

void rotate_inplace_meta(const at::Tensor& q, const std::optional<at::Tensor>& k,
                         const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq, double mscale,
                         const std::optional<at::Tensor>& positions, bool /*interleaved*/) {
  detail::plan_rotate_inplace("yarn_ext.rotate_inplace", q, k, cos_sin_cache, inv_freq, mscale,
                              positions);
}

}  // namespace

TORCH_LIBRARY_IMPL(yarn_ext, Meta, m) {
  m.impl("build_cos_sin_cache", &build_cos_sin_cache_meta);
  m.impl("rotate", &rotate_meta);
  m.impl("rotate_inplace", &rotate_inplace_meta);
}

}  // namespace yarn_ext::meta

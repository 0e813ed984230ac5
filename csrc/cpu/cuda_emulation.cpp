#include "cpu/cuda_emulation.h"

#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include "rotate_args.h"
#include "rotation_plan.h"
#include "yarn_ext/core/rotate_work.h"

namespace yarn_ext::testing {
namespace {

template <typename scalar_t, int kVec>
void run_items(const RotateArgs<scalar_t>& args, bool interleaved) {
  const int64_t total = args.total_items();
  for (int64_t index = 0; index < total; ++index) {
    if (interleaved) {
      rotate_work_item<scalar_t, kVec, true>(args, index);
    } else {
      rotate_work_item<scalar_t, kVec, false>(args, index);
    }
  }
}

bool emulate(const detail::RotationTask& first, const detail::RotationTask* second,
             const at::Tensor& cache, const at::Tensor& inv_freq, double mscale, bool interleaved,
             bool inverse) {
  TORCH_CHECK_VALUE(first.input.device().is_cpu(), "the CUDA emulation runs on CPU tensors");
  bool vector_path = false;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, first.input.scalar_type(), "yarn_ext_emulate_cuda", [&] {
        vector_path = detail::with_rotate_args<scalar_t>(
            first, second, cache, inv_freq, mscale, inverse, [&](auto width, const auto& args) {
              run_items<scalar_t, decltype(width)::value>(args, interleaved);
            });
      });
  return vector_path;
}

}  // namespace

bool emulate_cuda_rotate(const at::Tensor& x, at::Tensor& out, const at::Tensor& cos_sin_cache,
                         const at::Tensor& inv_freq, double mscale,
                         const std::optional<at::Tensor>& positions, bool interleaved,
                         bool inverse) {
  const detail::RotationTask task =
      detail::plan_rotate("yarn_ext.rotate", x, cos_sin_cache, inv_freq, mscale, positions);
  out = task.output;
  return emulate(task, nullptr, cos_sin_cache, inv_freq, mscale, interleaved, inverse);
}

bool emulate_cuda_rotate_inplace(const at::Tensor& q, const std::optional<at::Tensor>& k,
                                 const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq,
                                 double mscale, const std::optional<at::Tensor>& positions,
                                 bool interleaved) {
  const detail::InplaceRotation plan = detail::plan_rotate_inplace(
      "yarn_ext.rotate_inplace", q, k, cos_sin_cache, inv_freq, mscale, positions);
  return emulate(plan.q, plan.k ? &*plan.k : nullptr, cos_sin_cache, inv_freq, mscale, interleaved,
                 /*inverse=*/false);
}

}  // namespace yarn_ext::testing

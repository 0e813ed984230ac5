// Autograd-key kernels. The rotation's backward arrives with the training work; until then these
// kernels make sure autograd is never silently wrong: a call that would need a gradient raises,
// and the in-place operator bumps the version counters of q and k (what ADInplaceOrView does
// for ATen's in-place ops), so autograd notices tensors it saved being overwritten.
#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <optional>

#include "yarn_ext/ops.h"

namespace yarn_ext::autograd {
namespace {

bool needs_grad(const at::Tensor& t) {
  return c10::GradMode::is_enabled() && t.requires_grad();
}

at::Tensor rotate_autograd(const at::Tensor& x, const at::Tensor& cos_sin_cache,
                           const at::Tensor& inv_freq, double mscale,
                           const std::optional<at::Tensor>& positions, bool interleaved) {
  TORCH_CHECK(!needs_grad(x),
              "yarn_ext.rotate: x requires grad, and gradients of the rotation are not supported "
              "in this version; run it under torch.no_grad() or on a detached tensor");
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return yarn_ext::rotate(x, cos_sin_cache, inv_freq, mscale, positions, interleaved);
}

void rotate_inplace_autograd(const at::Tensor& q, const std::optional<at::Tensor>& k,
                             const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq,
                             double mscale, const std::optional<at::Tensor>& positions,
                             bool interleaved) {
  const bool has_k = k.has_value() && k->defined();
  TORCH_CHECK(!needs_grad(q) && !(has_k && needs_grad(*k)),
              "yarn_ext.rotate_inplace: q or k requires grad; the in-place rotation (rotate_) is "
              "for inference. Use YarnEmbedding.forward / yarn_ext.ops.rotate where gradients "
              "are needed");
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor q_ref = q;
    yarn_ext::rotate_inplace(q_ref, k, cos_sin_cache, inv_freq, mscale, positions, interleaved);
  }
  torch::autograd::impl::bump_version(q);
  if (has_k) torch::autograd::impl::bump_version(*k);
}

}  // namespace

TORCH_LIBRARY_IMPL(yarn_ext, Autograd, m) {
  m.impl("rotate", &rotate_autograd);
  m.impl("rotate_inplace", &rotate_inplace_autograd);
}

}  // namespace yarn_ext::autograd

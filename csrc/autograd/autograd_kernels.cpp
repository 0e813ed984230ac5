// Autograd-key kernels, registered in C++ so that LibTorch training gets gradients too.
//
// rotate is linear in x: y = mscale * R(angle) x on the rotary features, y = x on the rest. Its
// gradient is the transpose, mscale * R(-angle) g and g passed through: the same operator with
// inverse flipped. The backward calls the operator through the dispatcher, so with create_graph
// it is recorded again and every higher derivative follows (gradgradcheck), and under
// torch.compile AOTAutograd traces the backward as one more yarn_ext::rotate node.
//
// rotate_inplace is for inference: a call autograd would have to record raises, and the version
// counters of q and k are bumped (what ADInplaceOrView does for ATen's in-place ops), so autograd
// notices tensors it saved being overwritten.
#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <optional>

#include "yarn_ext/ops.h"

namespace yarn_ext::autograd {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool needs_grad(const at::Tensor& t) {
  return c10::GradMode::is_enabled() && t.defined() && t.requires_grad();
}

class RotateFunction : public torch::autograd::Function<RotateFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq,
                            double mscale, const std::optional<at::Tensor>& positions,
                            bool interleaved, bool inverse) {
    ctx->save_for_backward({cos_sin_cache, inv_freq, positions.value_or(at::Tensor())});
    ctx->saved_data["mscale"] = mscale;
    ctx->saved_data["interleaved"] = interleaved;
    ctx->saved_data["inverse"] = inverse;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return yarn_ext::rotate(x, cos_sin_cache, inv_freq, mscale, positions, interleaved, inverse);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    // One gradient per forward argument: only x has one.
    variable_list grads(7);
    const at::Tensor& grad = grad_outputs[0];
    if (!grad.defined()) return grads;
    const variable_list saved = ctx->get_saved_variables();
    std::optional<at::Tensor> positions;
    if (saved[2].defined()) positions = saved[2];
    grads[0] = yarn_ext::rotate(grad, saved[0], saved[1], ctx->saved_data["mscale"].toDouble(),
                                positions, ctx->saved_data["interleaved"].toBool(),
                                !ctx->saved_data["inverse"].toBool());
    return grads;
  }
};

at::Tensor rotate_autograd(const at::Tensor& x, const at::Tensor& cos_sin_cache,
                           const at::Tensor& inv_freq, double mscale,
                           const std::optional<at::Tensor>& positions, bool interleaved,
                           bool inverse) {
  // The tables are fixed functions of the configuration, not parameters: a gradient for them
  // would be silently missing, so asking for one is an error.
  TORCH_CHECK(!needs_grad(cos_sin_cache) && !needs_grad(inv_freq),
              "yarn_ext.rotate: cos_sin_cache and inv_freq are not differentiable (the rotation "
              "is differentiable with respect to x only); pass tables that do not require grad");
  return RotateFunction::apply(x, cos_sin_cache, inv_freq, mscale, positions, interleaved, inverse);
}

void rotate_inplace_autograd(const at::Tensor& q, const std::optional<at::Tensor>& k,
                             const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq,
                             double mscale, const std::optional<at::Tensor>& positions,
                             bool interleaved) {
  const bool has_k = k.has_value() && k->defined();
  TORCH_CHECK(!needs_grad(q) && !(has_k && needs_grad(*k)),
              "yarn_ext.rotate_inplace: q or k requires grad, and the in-place rotation "
              "(YarnEmbedding.rotate_) is for inference. Where gradients are needed use "
              "YarnEmbedding.forward (yarn_ext.ops.rotate), which is differentiable");
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

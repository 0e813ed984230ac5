// The backward of yarn_ext::rotate for C++ programs: a torch::autograd::Function compiled into
// the program against its own LibTorch (the library registers no autograd kernel: it is built on
// the stable ABI; Python registers the same backward with torch.library.register_autograd).
//
// rotate is linear in x: y = mscale * R(angle) x on the rotary features, y = x on the rest. Its
// gradient is the transpose, mscale * R(-angle) g and g passed through: the same operator with
// inverse flipped, called through this function again, so with create_graph every higher
// derivative follows.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/custom_function.h>

#include <optional>
#include <stdexcept>
#include <vector>

#include "yarn_ext/library_anchor.h"

namespace yarn_ext::detail {

// The registered operator yarn_ext::rotate (its MRoPE overload with mrope_section), called
// below autograd.
inline at::Tensor call_rotate(const at::Tensor& x, const at::Tensor& cos_sin_cache,
                              const at::Tensor& inv_freq, double mscale,
                              const std::optional<at::Tensor>& positions, bool interleaved,
                              bool inverse, at::OptionalIntArrayRef mrope_section,
                              bool mrope_interleaved) {
  if (mrope_section.has_value()) {
    static const auto mrope =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("yarn_ext::rotate", "mrope")
            .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                              const std::optional<at::Tensor>&, bool, bool, at::IntArrayRef,
                              bool)>();
    return mrope.call(x, cos_sin_cache, inv_freq, mscale, positions, interleaved, inverse,
                      *mrope_section, mrope_interleaved);
  }
  if (mrope_interleaved) {
    throw std::invalid_argument("yarn_ext: mrope_interleaved needs mrope_section");
  }
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("yarn_ext::rotate", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                            const std::optional<at::Tensor>&, bool, bool)>();
  return op.call(x, cos_sin_cache, inv_freq, mscale, positions, interleaved, inverse);
}

class RotateFunction : public torch::autograd::Function<RotateFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq,
                            double mscale, const std::optional<at::Tensor>& positions,
                            bool interleaved, bool inverse, at::OptionalIntArrayRef mrope_section,
                            bool mrope_interleaved) {
    ctx->save_for_backward({cos_sin_cache, inv_freq, positions.value_or(at::Tensor())});
    ctx->saved_data["mscale"] = mscale;
    ctx->saved_data["interleaved"] = interleaved;
    ctx->saved_data["inverse"] = inverse;
    if (mrope_section.has_value()) ctx->saved_data["mrope_section"] = mrope_section->vec();
    ctx->saved_data["mrope_interleaved"] = mrope_interleaved;
    return call_rotate(x, cos_sin_cache, inv_freq, mscale, positions, interleaved, inverse,
                       mrope_section, mrope_interleaved);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    // One gradient per forward argument: only x has one.
    torch::autograd::variable_list grads(9);
    const at::Tensor& grad = grad_outputs[0];
    if (!grad.defined()) return grads;
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    std::optional<at::Tensor> positions;
    if (saved[2].defined()) positions = saved[2];
    // The same per-pair angles (MRoPE's included), negated: the transpose.
    std::optional<std::vector<int64_t>> sections;
    const auto found = ctx->saved_data.find("mrope_section");
    if (found != ctx->saved_data.end()) sections = found->second.toIntVector();
    grads[0] = RotateFunction::apply(
        grad, saved[0], saved[1], ctx->saved_data["mscale"].toDouble(), positions,
        ctx->saved_data["interleaved"].toBool(), !ctx->saved_data["inverse"].toBool(),
        sections.has_value() ? at::OptionalIntArrayRef(*sections) : at::OptionalIntArrayRef(),
        ctx->saved_data["mrope_interleaved"].toBool());
    return grads;
  }
};

}  // namespace yarn_ext::detail

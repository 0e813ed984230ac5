// Operator schemas (the one place they are declared) and the C++ entry points of ops.h, which
// call through the dispatcher so that every registered backend serves C++ callers too.
#include "yarn_ext/ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace yarn_ext {

TORCH_LIBRARY(yarn_ext, m) {
  m.def("build_cos_sin_cache(Tensor inv_freq, SymInt num_positions, float mscale) -> Tensor");
  // inverse=True rotates by -angle (the transpose of the rotation, times mscale): the backward.
  m.def(
      "rotate(Tensor x, Tensor cos_sin_cache, Tensor inv_freq, float mscale, "
      "Tensor? positions=None, bool interleaved=False, bool inverse=False) -> Tensor");
  // q and k are rotated in place (marked mutable); nothing is returned, as in vLLM's kernel.
  m.def(
      "rotate_inplace(Tensor(a!) q, Tensor(b!)? k, Tensor cos_sin_cache, Tensor inv_freq, "
      "float mscale, Tensor? positions=None, bool interleaved=False) -> ()");
}

namespace {

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

}  // namespace

namespace detail {
int library_anchor() {
  return 0;
}
}  // namespace detail

at::Tensor build_cos_sin_cache(const at::Tensor& inv_freq, int64_t num_positions, double mscale) {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, c10::SymInt, double)>("yarn_ext::build_cos_sin_cache");
  return op.call(inv_freq, c10::SymInt(num_positions), mscale);
}

at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq,
                  double mscale, const std::optional<at::Tensor>& positions, bool interleaved,
                  bool inverse) {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                         const std::optional<at::Tensor>&, bool, bool)>("yarn_ext::rotate");
  return op.call(x, cos_sin_cache, inv_freq, mscale, positions, interleaved, inverse);
}

void rotate_inplace(at::Tensor& q, const std::optional<at::Tensor>& k,
                    const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq, double mscale,
                    const std::optional<at::Tensor>& positions, bool interleaved) {
  static const auto op =
      find_op<void(const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
                   const at::Tensor&, double, const std::optional<at::Tensor>&, bool)>(
          "yarn_ext::rotate_inplace");
  op.call(q, k, cos_sin_cache, inv_freq, mscale, positions, interleaved);
}

}  // namespace yarn_ext

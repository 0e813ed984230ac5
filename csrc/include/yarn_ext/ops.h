// The yarn_ext operators for C++ callers: header-only, compiled in the program against its own
// LibTorch. Each call goes through the dispatcher to the kernels libyarn_ext (CPU) and
// libyarn_ext_cuda (CUDA) registered; rotate is differentiable through yarn_ext/autograd.h.
//
// Tables: `inv_freq` is float64 [dim / 2]; `cos_sin_cache` is float32 [positions, dim] holding
// mscale * cos in columns [0, dim/2) and mscale * sin in [dim/2, dim), row p for position p.
// Positions outside the cache (negative or too large) are computed on the fly from inv_freq.
// A bad argument throws std::invalid_argument naming it.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <c10/core/SymInt.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/variable.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <utility>

#include "yarn_ext/autograd.h"
#include "yarn_ext/library_anchor.h"

namespace yarn_ext {

inline at::Tensor build_cos_sin_cache(const at::Tensor& inv_freq, int64_t num_positions,
                                      double mscale) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("yarn_ext::build_cos_sin_cache", "")
                             .typed<at::Tensor(const at::Tensor&, c10::SymInt, double)>();
  return op.call(inv_freq, c10::SymInt(num_positions), mscale);
}

// x [..., S, D] with D >= dim: returns x with its first dim features rotated. positions (int32 or
// int64) broadcasts against x.shape[:-1]; without it, row s along dim -2 gets position s.
// inverse = true rotates by -angle: the transpose of the forward (both scale by mscale), which is
// its gradient. Differentiable (twice and more) with respect to x; the tables are not.
//
// MRoPE (Qwen2-VL and later): mrope_section gives how many frequencies follow each of a token's
// t, h and w positions (summing to dim / 2), in runs or, with mrope_interleaved, t, h, w, t, ...
// positions may then carry one more leading dimension of size 3 ([3, T, 1] for [T, H, D]);
// plain positions mean three equal components.
inline at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos_sin_cache,
                         const at::Tensor& inv_freq, double mscale,
                         const std::optional<at::Tensor>& positions = std::nullopt,
                         bool interleaved = false, bool inverse = false,
                         at::OptionalIntArrayRef mrope_section = std::nullopt,
                         bool mrope_interleaved = false) {
  const bool grad = c10::GradMode::is_enabled();
  TORCH_CHECK(!grad || (!cos_sin_cache.requires_grad() && !inv_freq.requires_grad()),
              "yarn_ext.rotate: cos_sin_cache and inv_freq are not differentiable (the rotation "
              "is differentiable with respect to x only); pass tables that do not require grad");
  if (grad && x.requires_grad()) {
    return detail::RotateFunction::apply(x, cos_sin_cache, inv_freq, mscale, positions, interleaved,
                                         inverse, mrope_section, mrope_interleaved);
  }
  return detail::call_rotate(x, cos_sin_cache, inv_freq, mscale, positions, interleaved, inverse,
                             mrope_section, mrope_interleaved);
}

// Rotates q and, when given, k in place in one call. Everything is validated before anything is
// written, so a call that throws has changed nothing. For inference: where q or k requires grad
// this throws (use rotate). The version counters of q and k are bumped, as by ATen's in-place
// ops, so that autograd notices saved tensors being overwritten.
inline void rotate_inplace(at::Tensor& q, const std::optional<at::Tensor>& k,
                           const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq,
                           double mscale, const std::optional<at::Tensor>& positions = std::nullopt,
                           bool interleaved = false,
                           at::OptionalIntArrayRef mrope_section = std::nullopt,
                           bool mrope_interleaved = false) {
  const bool has_k = k.has_value() && k->defined();
  TORCH_CHECK(
      !c10::GradMode::is_enabled() || (!q.requires_grad() && !(has_k && k->requires_grad())),
      "yarn_ext.rotate_inplace: q or k requires grad, and the in-place rotation "
      "(YarnEmbedding::rotate_) is for inference. Where gradients are needed use "
      "YarnEmbedding::forward (yarn_ext::rotate), which is differentiable");
  if (mrope_section.has_value()) {
    static const auto mrope =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("yarn_ext::rotate_inplace", "mrope")
            .typed<void(const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
                        const at::Tensor&, double, const std::optional<at::Tensor>&, bool,
                        at::IntArrayRef, bool)>();
    mrope.call(q, has_k ? k : std::nullopt, cos_sin_cache, inv_freq, mscale, positions, interleaved,
               *mrope_section, mrope_interleaved);
  } else {
    if (mrope_interleaved) {
      throw std::invalid_argument("yarn_ext: mrope_interleaved needs mrope_section");
    }
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("yarn_ext::rotate_inplace", "")
            .typed<void(const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
                        const at::Tensor&, double, const std::optional<at::Tensor>&, bool)>();
    op.call(q, has_k ? k : std::nullopt, cos_sin_cache, inv_freq, mscale, positions, interleaved);
  }
  if (!q.is_inference()) torch::autograd::impl::bump_version(q);
  if (has_k && !k->is_inference()) torch::autograd::impl::bump_version(*k);
}

// rotate_store_kv's optional arguments (Python's keywords).
struct KvStoreOptions {
  // RMSNorm of q and k per head ([head_dim], q's dtype); absent: no norm. Qwen3's form (float32,
  // rounded to the dtype, times the weight), or with norm_unit_offset Qwen3.5's (times 1 + weight
  // in float32, rounded once).
  std::optional<at::Tensor> q_norm_weight;
  std::optional<at::Tensor> k_norm_weight;
  double eps = 1e-6;
  bool norm_unit_offset = false;
  // float8_e4m3fn caches: float32 scales of one value (values are divided by them, saturated)
  std::optional<at::Tensor> k_scale;
  std::optional<at::Tensor> v_scale;
  bool write_k = false;  // also write the normalized, rotated k back into k
  // CUDA: an int32 counter of one element on q's device, which the kernel adds the tokens whose
  // slot lies outside the caches to (their k and v are skipped, with no host synchronization).
  // The CPU throws on such a slot before writing anything, and leaves the counter as it is.
  std::optional<at::Tensor> invalid_slots;
};

// Serving's step after the qkv projection, in one pass: q [T, Hq, D] and k [T, Hkv, D]
// normalized (when the weights are given) and rotated as rotate_inplace rotates them - q in
// place - and k and v [T, Hkv, Dv] written to the paged caches [num_blocks, block_size, Hkv, D]
// at slot_mapping [T] (-1: padding, nothing written), quantized for float8_e4m3fn caches.
// positions: [T] or [T, 1] (MRoPE also [3, T] or [3, T, 1]); the style arguments are rotate's.
// A call that throws has changed nothing. For inference.
inline void rotate_store_kv(at::Tensor& q, at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq,
                            double mscale, const at::Tensor& positions, at::Tensor& k_cache,
                            at::Tensor& v_cache, const at::Tensor& slot_mapping,
                            const KvStoreOptions& options = {}, bool interleaved = false,
                            at::OptionalIntArrayRef mrope_section = std::nullopt,
                            bool mrope_interleaved = false) {
  if (c10::GradMode::is_enabled()) {
    // Every float tensor: a gradient through any of them (a norm weight that is a model's
    // parameter, say) would be lost without a word.
    const std::pair<const char*, const at::Tensor*> tensors[] = {
        {"q", &q},
        {"k", &k},
        {"v", &v},
        {"cos_sin_cache", &cos_sin_cache},
        {"inv_freq", &inv_freq},
        {"k_cache", &k_cache},
        {"v_cache", &v_cache},
        {"q_norm_weight", options.q_norm_weight ? &*options.q_norm_weight : nullptr},
        {"k_norm_weight", options.k_norm_weight ? &*options.k_norm_weight : nullptr},
        {"k_scale", options.k_scale ? &*options.k_scale : nullptr},
        {"v_scale", options.v_scale ? &*options.v_scale : nullptr}};
    for (const auto& [name, tensor] : tensors) {
      TORCH_CHECK(tensor == nullptr || !tensor->requires_grad(), "yarn_ext.rotate_store_kv: ", name,
                  " requires grad; the fused serving step is for inference and has no gradient "
                  "(run it under torch::NoGradGuard or c10::InferenceMode)");
    }
  }
  if (mrope_interleaved && !mrope_section.has_value()) {
    throw std::invalid_argument("yarn_ext: mrope_interleaved needs mrope_section");
  }
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("yarn_ext::rotate_store_kv", "")
          .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      const at::Tensor&, double, const at::Tensor&, const at::Tensor&,
                      const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                      const std::optional<at::Tensor>&, double, bool,
                      const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool,
                      bool, at::OptionalIntArrayRef, bool, const std::optional<at::Tensor>&)>();
  op.call(q, k, v, cos_sin_cache, inv_freq, mscale, positions, k_cache, v_cache, slot_mapping,
          options.q_norm_weight, options.k_norm_weight, options.eps, options.norm_unit_offset,
          options.k_scale, options.v_scale, interleaved, options.write_k, mrope_section,
          mrope_interleaved, options.invalid_slots);
  for (at::Tensor* t : {&q, &k_cache, &v_cache}) {
    if (!t->is_inference()) torch::autograd::impl::bump_version(*t);
  }
  if (options.write_k && !k.is_inference()) torch::autograd::impl::bump_version(k);
  if (options.invalid_slots.has_value() && !options.invalid_slots->is_inference()) {
    torch::autograd::impl::bump_version(*options.invalid_slots);
  }
}

}  // namespace yarn_ext

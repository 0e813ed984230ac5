// The rotation operators' overloads (schemas.cpp): plain RoPE (yarn_ext::rotate,
// yarn_ext::rotate_inplace) and MRoPE (their .mrope overloads), over the one implementation per
// device that takes the MRoPE arguments as optional ones. The overloads exist so that a plain
// call - a decode step - parses no MRoPE argument.
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace yarn_ext::detail {

using torch::stable::Tensor;
using MropeArgument = std::optional<std::vector<int64_t>>;

using RotateAny = Tensor (*)(Tensor x, Tensor cos_sin_cache, Tensor inv_freq, double mscale,
                             std::optional<Tensor> positions, bool interleaved, bool inverse,
                             MropeArgument mrope_section, bool mrope_interleaved);
using RotateInplaceAny = void (*)(Tensor q, std::optional<Tensor> k, Tensor cos_sin_cache,
                                  Tensor inv_freq, double mscale, std::optional<Tensor> positions,
                                  bool interleaved, MropeArgument mrope_section,
                                  bool mrope_interleaved);

template <RotateAny rotate_any, RotateInplaceAny rotate_inplace_any>
struct RotationOverloads {
  static Tensor rotate(Tensor x, Tensor cos_sin_cache, Tensor inv_freq, double mscale,
                       std::optional<Tensor> positions, bool interleaved, bool inverse) {
    return rotate_any(std::move(x), std::move(cos_sin_cache), std::move(inv_freq), mscale,
                      std::move(positions), interleaved, inverse, std::nullopt, false);
  }

  static Tensor rotate_mrope(Tensor x, Tensor cos_sin_cache, Tensor inv_freq, double mscale,
                             std::optional<Tensor> positions, bool interleaved, bool inverse,
                             std::vector<int64_t> mrope_section, bool mrope_interleaved) {
    return rotate_any(std::move(x), std::move(cos_sin_cache), std::move(inv_freq), mscale,
                      std::move(positions), interleaved, inverse, std::move(mrope_section),
                      mrope_interleaved);
  }

  static void rotate_inplace(Tensor q, std::optional<Tensor> k, Tensor cos_sin_cache,
                             Tensor inv_freq, double mscale, std::optional<Tensor> positions,
                             bool interleaved) {
    rotate_inplace_any(std::move(q), std::move(k), std::move(cos_sin_cache), std::move(inv_freq),
                       mscale, std::move(positions), interleaved, std::nullopt, false);
  }

  static void rotate_inplace_mrope(Tensor q, std::optional<Tensor> k, Tensor cos_sin_cache,
                                   Tensor inv_freq, double mscale, std::optional<Tensor> positions,
                                   bool interleaved, std::vector<int64_t> mrope_section,
                                   bool mrope_interleaved) {
    rotate_inplace_any(std::move(q), std::move(k), std::move(cos_sin_cache), std::move(inv_freq),
                       mscale, std::move(positions), interleaved, std::move(mrope_section),
                       mrope_interleaved);
  }
};

}  // namespace yarn_ext::detail

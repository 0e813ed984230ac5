// yarn_ext::YarnEmbedding: the C++ (LibTorch) twin of the Python module yarn_ext.YarnEmbedding,
// with the same options, defaults and results. It owns float64 inv_freq and the float32 cos/sin
// cache and calls the operators through the dispatcher (CPU, CUDA, autograd).
#pragma once

#include "yarn_ext/library_anchor.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <utility>

namespace yarn_ext {

// The Python constructor's arguments, with its defaults.
struct YarnEmbeddingOptions {
  /* implicit */ YarnEmbeddingOptions(int64_t dim) : dim_(dim) {}

  TORCH_ARG(int64_t, dim);  // rotary dimension (even); inputs may be wider
  TORCH_ARG(int64_t, max_position_embeddings) = 2048;
  TORCH_ARG(double, base) = 10000;
  TORCH_ARG(int64_t, original_max_position_embeddings) = 2048;
  TORCH_ARG(double, extrapolation_factor) = 1;
  TORCH_ARG(double, attn_factor) = 1;
  TORCH_ARG(double, beta_fast) = 32;
  TORCH_ARG(double, beta_slow) = 1;
  // false: plain RoPE until the cache grows; true: static YaRN at scaling_factor (or
  // max_position_embeddings / original_max_position_embeddings).
  TORCH_ARG(bool, finetuned) = false;
  TORCH_ARG(std::optional<c10::Device>, device) = std::nullopt;
  TORCH_ARG(std::optional<double>, scaling_factor) = std::nullopt;
  TORCH_ARG(std::optional<double>, attention_factor) = std::nullopt;  // overrides the mscale
  TORCH_ARG(bool, truncate) = true;
  TORCH_ARG(bool, interleaved) = false;  // GPT-J pairs (2i, 2i+1) instead of (i, i + dim/2)
};

class YarnEmbeddingImpl : public torch::nn::Module {
 public:
  explicit YarnEmbeddingImpl(YarnEmbeddingOptions options);

  // x [..., S, D] (D >= dim) with YaRN applied to its first dim features. positions (int32 or
  // int64) broadcasts against x.shape[:-1]; without it row s along dim -2 gets position s and
  // seq_len defaults to S. A length past the cache grows it (dynamic YaRN, as in Python).
  // Differentiable with respect to x.
  at::Tensor forward(const at::Tensor& x, std::optional<int64_t> seq_len = std::nullopt,
                     const std::optional<at::Tensor>& positions = std::nullopt);

  // Rotates q and (optionally) k in place in one call and returns them. For inference.
  std::pair<at::Tensor, std::optional<at::Tensor>> rotate_(
      at::Tensor q, std::optional<at::Tensor> k = std::nullopt,
      const std::optional<at::Tensor>& positions = std::nullopt,
      std::optional<int64_t> seq_len = std::nullopt);

  // (cos, sin), each [1, 1, seq_len, dim], scaled by mscale (Zeta's forward's return value).
  std::pair<at::Tensor, at::Tensor> cos_sin(int64_t seq_len,
                                            std::optional<at::ScalarType> dtype = std::nullopt,
                                            std::optional<c10::Device> device = std::nullopt);

  const at::Tensor& inv_freq() const { return inv_freq_; }            // float64 [dim / 2]
  const at::Tensor& cos_sin_cache() const { return cos_sin_cache_; }  // float32 [positions, dim]
  double scale() const { return scale_; }
  double mscale() const { return mscale_; }
  int64_t max_seq_len_cached() const { return cos_sin_cache_.size(0); }

  // Device moves move the tables; dtype conversions keep their precision (float64 / float32).
  void to(c10::Device device, bool non_blocking = false) override;
  void to(c10::ScalarType dtype, bool non_blocking = false) override;
  void to(c10::Device device, c10::ScalarType dtype, bool non_blocking = false) override;

  void pretty_print(std::ostream& stream) const override;

  YarnEmbeddingOptions options;

 private:
  struct Tables {
    at::Tensor inv_freq;
    at::Tensor cos_sin_cache;
    double scale;
    double mscale;
  };
  Tables make_tables(std::optional<double> scale, int64_t num_positions,
                     std::optional<c10::Device> device) const;
  Tables grown_tables(int64_t seq_len) const;
  void commit(Tables tables);

  at::Tensor inv_freq_;
  at::Tensor cos_sin_cache_;
  double scale_ = 1.0;
  double mscale_ = 1.0;
};

TORCH_MODULE(YarnEmbedding);

}  // namespace yarn_ext

// yarn_ext::YarnEmbedding: the C++ (LibTorch) twin of the Python module yarn_ext.YarnEmbedding,
// with the same options, defaults and results. It owns float64 inv_freq and the float32 cos/sin
// cache and calls the operators through the dispatcher (CPU, CUDA, autograd). Header-only: it is
// compiled in the program, against the program's LibTorch.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <ostream>
#include <utility>

#include "yarn_ext/helper_math.h"
#include "yarn_ext/helpers.h"
#include "yarn_ext/library_anchor.h"
#include "yarn_ext/ops.h"

namespace yarn_ext {

namespace detail {
// A module's lock, which a copy of the module does not share: a copy gets a fresh one.
struct ModuleLock {
  ModuleLock() = default;
  ModuleLock(const ModuleLock& /*other*/) {}
  ModuleLock& operator=(const ModuleLock& /*other*/) { return *this; }
  std::recursive_mutex mutex;
};
}  // namespace detail

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

  // The current tables (copies of the handles: another thread may grow the module meanwhile).
  at::Tensor inv_freq() const { return current().inv_freq; }            // float64 [dim / 2]
  at::Tensor cos_sin_cache() const { return current().cos_sin_cache; }  // float32 [positions, dim]
  double scale() const { return current().scale; }
  double mscale() const { return current().mscale; }
  int64_t max_seq_len_cached() const { return current().cos_sin_cache.size(0); }

  // Device moves move the tables; dtype conversions keep their precision (float64 / float32).
  void to(c10::Device device, bool non_blocking = false) override;
  void to(c10::ScalarType dtype, bool non_blocking = false) override;
  void to(c10::Device device, c10::ScalarType dtype, bool non_blocking = false) override;

  void pretty_print(std::ostream& stream) const override;

  YarnEmbeddingOptions options;

 private:
  // What the kernels read, and how it was made.
  struct TableSet {
    at::Tensor inv_freq;
    at::Tensor cos_sin_cache;
    double scale;
    double mscale;
  };
  TableSet make_tables(std::optional<double> scale, int64_t num_positions,
                       std::optional<c10::Device> device) const;
  // The tables for a call needing `needed` positions, under the lock: the current ones, or grown
  // ones (`grows` set) to commit once the call's kernel succeeded.
  TableSet tables_for(int64_t needed, bool* grows) const;
  TableSet current() const;

  // Thread safety: calls from several threads are safe. Each call takes one snapshot of the
  // tables; growth holds the module's own lock (a thread that finds the module grown meanwhile
  // uses the new tables), and a commit replaces the whole set at once, so a call sees one state
  // or the next, never a mix.
  TableSet tables_;
  mutable detail::ModuleLock lock_;
};

TORCH_MODULE(YarnEmbedding);

// -- implementation ----------------------------------------------------------------------------

namespace detail {

inline constexpr const char* kModule = "yarn_ext::YarnEmbedding";

inline int64_t positive(const char* name, int64_t value) {
  helper_math::require(value > 0, kModule, name, " must be positive, got ", value);
  return value;
}

// The length a call needs cached: seq_len, or without positions the longest dim -2 of the
// tensors (row s gets position s). With positions and no seq_len, nothing: positions past the
// cache are computed on the fly, and nothing is read back to the host.
inline std::optional<int64_t> needed_length(std::optional<int64_t> seq_len,
                                            const std::optional<at::Tensor>& positions,
                                            std::initializer_list<const at::Tensor*> tensors) {
  if (seq_len.has_value()) return detail::positive("seq_len", *seq_len);
  if (positions.has_value() && positions->defined()) return std::nullopt;
  std::optional<int64_t> longest;
  for (const at::Tensor* t : tensors) {
    if (t != nullptr && t->defined() && t->dim() >= 2) {
      longest = std::max(longest.value_or(0), t->size(-2));
    }
  }
  return longest;
}

}  // namespace detail

inline YarnEmbeddingImpl::YarnEmbeddingImpl(YarnEmbeddingOptions options_)
    : options(std::move(options_)) {
  detail::positive("max_position_embeddings", options.max_position_embeddings());
  detail::positive("original_max_position_embeddings", options.original_max_position_embeddings());
  helper_math::require(!options.scaling_factor().has_value() || options.finetuned(),
                       detail::kModule,
                       "scaling_factor is only used with finetuned=true (static YaRN)");
  if (options.scaling_factor().has_value()) {
    const double s = *options.scaling_factor();
    helper_math::require(std::isfinite(s) && s > 0, detail::kModule,
                         "scaling_factor must be a finite number > 0, got ", s);
  }
  helper_math::require(std::isfinite(options.attn_factor()), detail::kModule,
                       "attn_factor must be finite, got ", options.attn_factor());
  if (options.attention_factor().has_value()) {
    helper_math::require(std::isfinite(*options.attention_factor()), detail::kModule,
                         "attention_factor must be finite, got ", *options.attention_factor());
  }
  std::optional<double> scale;
  if (options.finetuned()) {
    scale = options.scaling_factor().value_or(
        static_cast<double>(options.max_position_embeddings()) /
        static_cast<double>(options.original_max_position_embeddings()));
  }
  tables_ = make_tables(scale, options.max_position_embeddings(), options.device());
}

inline YarnEmbeddingImpl::TableSet YarnEmbeddingImpl::make_tables(
    std::optional<double> scale, int64_t num_positions, std::optional<c10::Device> device) const {
  at::Tensor inv_freq =
      yarn_inv_freq(options.dim(), options.base(), scale.value_or(1.0),
                    options.original_max_position_embeddings(), options.extrapolation_factor(),
                    options.beta_fast(), options.beta_slow(), options.truncate());
  if (device.has_value()) inv_freq = inv_freq.to(*device);
  const double mscale =
      helper_math::table_mscale(scale, options.attn_factor(), options.attention_factor());
  at::Tensor cache = build_cos_sin_cache(inv_freq, num_positions, mscale);
  return {std::move(inv_freq), std::move(cache), scale.value_or(1.0), mscale};
}

inline YarnEmbeddingImpl::TableSet YarnEmbeddingImpl::current() const {
  const std::lock_guard<std::recursive_mutex> guard(lock_.mutex);
  return tables_;
}

inline YarnEmbeddingImpl::TableSet YarnEmbeddingImpl::tables_for(int64_t needed,
                                                                 bool* grows) const {
  *grows = needed > tables_.cos_sin_cache.size(0);
  if (!*grows) return tables_;
  if (const auto scale = helper_math::grown_scale(
          needed, options.original_max_position_embeddings(), tables_.scale)) {
    return make_tables(scale, needed, tables_.inv_freq.device());
  }
  return {tables_.inv_freq, build_cos_sin_cache(tables_.inv_freq, needed, tables_.mscale),
          tables_.scale, tables_.mscale};
}

inline at::Tensor YarnEmbeddingImpl::forward(const at::Tensor& x, std::optional<int64_t> seq_len,
                                             const std::optional<at::Tensor>& positions) {
  const std::optional<int64_t> needed = detail::needed_length(seq_len, positions, {&x});
  const TableSet snapshot = current();
  if (!needed.has_value() || *needed <= snapshot.cos_sin_cache.size(0)) {
    return rotate(x, snapshot.cos_sin_cache, snapshot.inv_freq, snapshot.mscale, positions,
                  options.interleaved());
  }
  // Committed only once the kernel succeeded: a call that throws changes nothing.
  const std::lock_guard<std::recursive_mutex> guard(lock_.mutex);
  bool grows = false;
  TableSet tables = tables_for(*needed, &grows);
  at::Tensor out = rotate(x, tables.cos_sin_cache, tables.inv_freq, tables.mscale, positions,
                          options.interleaved());
  if (grows) tables_ = std::move(tables);
  return out;
}

inline std::pair<at::Tensor, std::optional<at::Tensor>> YarnEmbeddingImpl::rotate_(
    at::Tensor q, std::optional<at::Tensor> k, const std::optional<at::Tensor>& positions,
    std::optional<int64_t> seq_len) {
  const at::Tensor* k_ptr = k.has_value() ? &*k : nullptr;
  const std::optional<int64_t> needed = detail::needed_length(seq_len, positions, {&q, k_ptr});
  const TableSet snapshot = current();
  if (!needed.has_value() || *needed <= snapshot.cos_sin_cache.size(0)) {
    rotate_inplace(q, k, snapshot.cos_sin_cache, snapshot.inv_freq, snapshot.mscale, positions,
                   options.interleaved());
    return {std::move(q), std::move(k)};
  }
  const std::lock_guard<std::recursive_mutex> guard(lock_.mutex);
  bool grows = false;
  TableSet tables = tables_for(*needed, &grows);
  rotate_inplace(q, k, tables.cos_sin_cache, tables.inv_freq, tables.mscale, positions,
                 options.interleaved());
  if (grows) tables_ = std::move(tables);
  return {std::move(q), std::move(k)};
}

inline std::pair<at::Tensor, at::Tensor> YarnEmbeddingImpl::cos_sin(
    int64_t seq_len, std::optional<at::ScalarType> dtype, std::optional<c10::Device> device) {
  detail::positive("seq_len", seq_len);
  // Built from the (possibly grown) tables and committed last: a call that throws changes nothing.
  const std::lock_guard<std::recursive_mutex> guard(lock_.mutex);
  bool grows = false;
  TableSet tables = tables_for(seq_len, &grows);
  const int64_t half = tables.inv_freq.size(0);
  const at::Tensor table = tables.cos_sin_cache.narrow(0, 0, seq_len);
  at::Tensor cos = table.narrow(1, 0, half);
  at::Tensor sin = table.narrow(1, half, half);
  // The layout matches the rotation style: each frequency twice in a row when interleaved,
  // else cat(freqs, freqs) (Zeta's).
  if (options.interleaved()) {
    cos = cos.repeat_interleave(2, -1);
    sin = sin.repeat_interleave(2, -1);
  } else {
    cos = at::cat({cos, cos}, -1);
    sin = at::cat({sin, sin}, -1);
  }
  auto finish = [&](const at::Tensor& t) {
    return t.unsqueeze(0).unsqueeze(0).to(device.value_or(t.device()),
                                          dtype.value_or(t.scalar_type()));
  };
  std::pair<at::Tensor, at::Tensor> result{finish(cos), finish(sin)};
  if (grows) tables_ = std::move(tables);
  return result;
}

inline void YarnEmbeddingImpl::to(c10::Device device, bool non_blocking) {
  // Both moved before either is replaced: a failed move leaves the tables together.
  const std::lock_guard<std::recursive_mutex> guard(lock_.mutex);
  at::Tensor inv_freq = tables_.inv_freq.to(device, /*non_blocking=*/non_blocking);
  at::Tensor cache = tables_.cos_sin_cache.to(device, /*non_blocking=*/non_blocking);
  tables_.inv_freq = std::move(inv_freq);
  tables_.cos_sin_cache = std::move(cache);
}

inline void YarnEmbeddingImpl::to(c10::ScalarType /*dtype*/, bool /*non_blocking*/) {
  // The tables keep float64 / float32 whatever the module's dtype: nothing to convert.
}

inline void YarnEmbeddingImpl::to(c10::Device device, c10::ScalarType /*dtype*/,
                                  bool non_blocking) {
  to(device, non_blocking);
}

inline void YarnEmbeddingImpl::pretty_print(std::ostream& stream) const {
  const TableSet tables = current();
  stream << "yarn_ext::YarnEmbedding(dim=" << options.dim() << ", base=" << options.base()
         << ", scale=" << tables.scale << ", mscale=" << tables.mscale
         << ", max_seq_len_cached=" << tables.cos_sin_cache.size(0)
         << ", interleaved=" << (options.interleaved() ? "true" : "false") << ")";
}

}  // namespace yarn_ext

// yarn_ext::YarnEmbedding (yarn_embedding.h): the same steps as yarn_ext/embedding.py, on the same
// operators, helpers and table policy (tables.h), so both modules compute the same tensors.
#include "yarn_ext/yarn_embedding.h"

#include <ATen/ops/cat.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

#include "yarn_ext/helpers.h"
#include "yarn_ext/ops.h"
#include "yarn_ext/tables.h"

namespace yarn_ext {
namespace {

constexpr const char* kModule = "yarn_ext::YarnEmbedding";

int64_t positive(const char* name, int64_t value) {
  TORCH_CHECK_VALUE(value > 0, kModule, ": ", name, " must be positive, got ", value);
  return value;
}

// The length a call needs cached: seq_len, or without positions the longest dim -2 of the
// tensors (row s gets position s). With positions and no seq_len, nothing: positions past the
// cache are computed on the fly, and nothing is read back to the host.
std::optional<int64_t> needed_length(std::optional<int64_t> seq_len,
                                     const std::optional<at::Tensor>& positions,
                                     std::initializer_list<const at::Tensor*> tensors) {
  if (seq_len.has_value()) return positive("seq_len", *seq_len);
  if (positions.has_value() && positions->defined()) return std::nullopt;
  std::optional<int64_t> longest;
  for (const at::Tensor* t : tensors) {
    if (t != nullptr && t->defined() && t->dim() >= 2) {
      longest = std::max(longest.value_or(0), t->size(-2));
    }
  }
  return longest;
}

}  // namespace

YarnEmbeddingImpl::YarnEmbeddingImpl(YarnEmbeddingOptions options_) : options(std::move(options_)) {
  positive("max_position_embeddings", options.max_position_embeddings());
  positive("original_max_position_embeddings", options.original_max_position_embeddings());
  TORCH_CHECK_VALUE(!options.scaling_factor().has_value() || options.finetuned(), kModule,
                    ": scaling_factor is only used with finetuned=true (static YaRN)");
  if (options.scaling_factor().has_value()) {
    const double s = *options.scaling_factor();
    TORCH_CHECK_VALUE(std::isfinite(s) && s > 0, kModule,
                      ": scaling_factor must be a finite number > 0, got ", s);
  }
  TORCH_CHECK_VALUE(std::isfinite(options.attn_factor()), kModule,
                    ": attn_factor must be finite, got ", options.attn_factor());
  if (options.attention_factor().has_value()) {
    TORCH_CHECK_VALUE(std::isfinite(*options.attention_factor()), kModule,
                      ": attention_factor must be finite, got ", *options.attention_factor());
  }
  std::optional<double> scale;
  if (options.finetuned()) {
    scale = options.scaling_factor().value_or(
        static_cast<double>(options.max_position_embeddings()) /
        static_cast<double>(options.original_max_position_embeddings()));
  }
  commit(make_tables(scale, options.max_position_embeddings(), options.device()));
}

YarnEmbeddingImpl::Tables YarnEmbeddingImpl::make_tables(std::optional<double> scale,
                                                         int64_t num_positions,
                                                         std::optional<c10::Device> device) const {
  at::Tensor inv_freq =
      yarn_inv_freq(options.dim(), options.base(), scale.value_or(1.0),
                    options.original_max_position_embeddings(), options.extrapolation_factor(),
                    options.beta_fast(), options.beta_slow(), options.truncate());
  if (device.has_value()) inv_freq = inv_freq.to(*device);
  const double mscale = table_mscale(scale, options.attn_factor(), options.attention_factor());
  at::Tensor cache = build_cos_sin_cache(inv_freq, num_positions, mscale);
  return {std::move(inv_freq), std::move(cache), scale.value_or(1.0), mscale};
}

YarnEmbeddingImpl::Tables YarnEmbeddingImpl::grown_tables(int64_t seq_len) const {
  if (const auto scale = grown_scale(seq_len, options.original_max_position_embeddings(), scale_)) {
    return make_tables(scale, seq_len, inv_freq_.device());
  }
  return {inv_freq_, build_cos_sin_cache(inv_freq_, seq_len, mscale_), scale_, mscale_};
}

void YarnEmbeddingImpl::commit(Tables tables) {
  inv_freq_ = std::move(tables.inv_freq);
  cos_sin_cache_ = std::move(tables.cos_sin_cache);
  scale_ = tables.scale;
  mscale_ = tables.mscale;
}

at::Tensor YarnEmbeddingImpl::forward(const at::Tensor& x, std::optional<int64_t> seq_len,
                                      const std::optional<at::Tensor>& positions) {
  const std::optional<int64_t> needed = needed_length(seq_len, positions, {&x});
  if (needed.has_value() && *needed > max_seq_len_cached()) {
    // Committed only once the kernel succeeded: a call that throws changes nothing.
    Tables grown = grown_tables(*needed);
    at::Tensor out = rotate(x, grown.cos_sin_cache, grown.inv_freq, grown.mscale, positions,
                            options.interleaved());
    commit(std::move(grown));
    return out;
  }
  return rotate(x, cos_sin_cache_, inv_freq_, mscale_, positions, options.interleaved());
}

std::pair<at::Tensor, std::optional<at::Tensor>> YarnEmbeddingImpl::rotate_(
    at::Tensor q, std::optional<at::Tensor> k, const std::optional<at::Tensor>& positions,
    std::optional<int64_t> seq_len) {
  const at::Tensor* k_ptr = k.has_value() ? &*k : nullptr;
  const std::optional<int64_t> needed = needed_length(seq_len, positions, {&q, k_ptr});
  if (needed.has_value() && *needed > max_seq_len_cached()) {
    Tables grown = grown_tables(*needed);
    rotate_inplace(q, k, grown.cos_sin_cache, grown.inv_freq, grown.mscale, positions,
                   options.interleaved());
    commit(std::move(grown));
  } else {
    rotate_inplace(q, k, cos_sin_cache_, inv_freq_, mscale_, positions, options.interleaved());
  }
  return {std::move(q), std::move(k)};
}

std::pair<at::Tensor, at::Tensor> YarnEmbeddingImpl::cos_sin(int64_t seq_len,
                                                             std::optional<at::ScalarType> dtype,
                                                             std::optional<c10::Device> device) {
  positive("seq_len", seq_len);
  // Built from the (possibly grown) tables and committed last: a call that throws changes nothing.
  Tables tables{inv_freq_, cos_sin_cache_, scale_, mscale_};
  const bool grows = seq_len > max_seq_len_cached();
  if (grows) tables = grown_tables(seq_len);
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
  if (grows) commit(std::move(tables));
  return result;
}

void YarnEmbeddingImpl::to(c10::Device device, bool non_blocking) {
  // Both moved before either is replaced: a failed move leaves the tables together.
  at::Tensor inv_freq = inv_freq_.to(device, /*non_blocking=*/non_blocking);
  at::Tensor cache = cos_sin_cache_.to(device, /*non_blocking=*/non_blocking);
  inv_freq_ = std::move(inv_freq);
  cos_sin_cache_ = std::move(cache);
}

void YarnEmbeddingImpl::to(c10::ScalarType /*dtype*/, bool /*non_blocking*/) {
  // The tables keep float64 / float32 whatever the module's dtype: nothing to convert.
}

void YarnEmbeddingImpl::to(c10::Device device, c10::ScalarType /*dtype*/, bool non_blocking) {
  to(device, non_blocking);
}

void YarnEmbeddingImpl::pretty_print(std::ostream& stream) const {
  stream << "yarn_ext::YarnEmbedding(dim=" << options.dim() << ", base=" << options.base()
         << ", scale=" << scale_ << ", mscale=" << mscale_
         << ", max_seq_len_cached=" << max_seq_len_cached()
         << ", interleaved=" << (options.interleaved() ? "true" : "false") << ")";
}

}  // namespace yarn_ext

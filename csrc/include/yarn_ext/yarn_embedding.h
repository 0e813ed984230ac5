// yarn_ext::YarnEmbedding: the C++ (LibTorch) twin of the Python module yarn_ext.YarnEmbedding,
// with the same options, defaults and results. It owns float64 inv_freq and the float32 cos/sin
// cache and calls the operators through the dispatcher (CPU, CUDA, autograd). Header-only: it is
// compiled in the program, against the program's LibTorch. Its policy - option checks, which
// tables it holds and when they grow, the length a call needs, cos_sin's layout - is
// table_policy.h's, which the Python module calls too; this class only holds the state.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/StringUtil.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <utility>
#include <vector>

#include "yarn_ext/helpers.h"
#include "yarn_ext/library_anchor.h"
#include "yarn_ext/ops.h"
#include "yarn_ext/table_policy.h"

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
  // MRoPE (Qwen2-VL and later): the frequencies that follow each of a token's t, h and w
  // positions (three counts summing to dim / 2), in runs or interleaved t, h, w, t, ...
  TORCH_ARG(std::optional<std::vector<int64_t>>, mrope_section) = std::nullopt;
  TORCH_ARG(bool, mrope_interleaved) = false;
  // What the model's attention multiplies its softmax scale by (DeepSeek's mscale_all_dim
  // correction); stored for the model, not used by the rotation.
  TORCH_ARG(double, softmax_scale_factor) = 1.0;
};

class YarnEmbeddingImpl : public torch::nn::Module {
 public:
  explicit YarnEmbeddingImpl(YarnEmbeddingOptions options);

  // x [..., S, D] (D >= dim) with YaRN applied to its first dim features. positions (int32 or
  // int64) broadcasts against x.shape[:-1]; without it row s along dim -2 gets position s and
  // seq_len defaults to S. A length past the cache grows it (dynamic YaRN, as in Python).
  // Differentiable with respect to x. With mrope_section, positions may carry the t, h and w
  // components in one more leading dimension ([3, T, 1] for [T, H, D]).
  at::Tensor forward(const at::Tensor& x, std::optional<int64_t> seq_len = std::nullopt,
                     const std::optional<at::Tensor>& positions = std::nullopt);

  // Rotates q and (optionally) k in place in one call and returns them. For inference.
  std::pair<at::Tensor, std::optional<at::Tensor>> rotate_(
      at::Tensor q, std::optional<at::Tensor> k = std::nullopt,
      const std::optional<at::Tensor>& positions = std::nullopt,
      std::optional<int64_t> seq_len = std::nullopt);

  // rotate_store_kv (yarn_ext/ops.h) with this module's tables and style, MRoPE's included:
  // q and k normalized per the options and rotated (q in place), k and v written to the paged
  // caches at slot_mapping. Positions past the cache are computed on the fly: nothing grows.
  // Returns q. For inference (serving).
  at::Tensor rotate_store_kv_(at::Tensor q, at::Tensor k, const at::Tensor& v,
                              const at::Tensor& positions, at::Tensor k_cache, at::Tensor v_cache,
                              const at::Tensor& slot_mapping, const KvStoreOptions& kv = {});

  // (cos, sin), each [1, 1, seq_len, dim], scaled by mscale (Zeta's forward's return value).
  std::pair<at::Tensor, at::Tensor> cos_sin(int64_t seq_len,
                                            std::optional<at::ScalarType> dtype = std::nullopt,
                                            std::optional<c10::Device> device = std::nullopt);

  // (cos, sin) at `positions`, each positions.shape + [dim] (without the component dimension
  // on an MRoPE module, where positions must be [3, ...]), as the rotation computes them;
  // nothing grows. Python's cos_sin(positions=...).
  std::pair<at::Tensor, at::Tensor> cos_sin_at(const at::Tensor& positions,
                                               std::optional<at::ScalarType> dtype = std::nullopt,
                                               std::optional<c10::Device> device = std::nullopt);

  // The current tables (copies of the handles: another thread may grow the module meanwhile).
  at::Tensor inv_freq() const { return current().inv_freq; }            // float64 [dim / 2]
  at::Tensor cos_sin_cache() const { return current().cos_sin_cache; }  // float32 [positions, dim]
  double scale() const { return current().scale; }
  double mscale() const { return current().mscale; }
  int64_t max_seq_len_cached() const { return current().cos_sin_cache.size(0); }

  // Rebuilds the tables as constructed (not as grown), on the device they are on (or the
  // options' device for a module that holds none: one moved from). Calls on a module without
  // tables throw instead of reading them.
  void reset_parameters();

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
  policy::ModuleConfig config() const;
  // The tables a plan describes: new frequencies (on `device`), or the current ones with the
  // planned cache.
  TableSet build(const policy::TablePlan& plan, std::optional<c10::Device> device) const;
  // Under the lock: the grown tables a call needing `needed` positions uses, to commit once its
  // kernel succeeded (the policy's protocol, table_policy.h); nothing when the current ones serve.
  std::optional<TableSet> grown(int64_t needed) const;
  // A snapshot of the tables, refused (std::runtime_error) where there are none.
  TableSet current() const;
  const TableSet& checked(const TableSet& tables) const;
  // The MRoPE sections as the operators take them (none: plain RoPE).
  at::OptionalIntArrayRef mrope() const {
    if (!options.mrope_section().has_value()) return std::nullopt;
    return at::IntArrayRef(*options.mrope_section());
  }
  // The policy's cos_sin column map on `device`, made there once (under lock_).
  const at::Tensor& columns(c10::Device device);

  // Thread safety: calls from several threads are safe. Each call takes one snapshot of the
  // tables; growth holds the module's own lock (a thread that finds the module grown meanwhile
  // uses the new tables), and a commit replaces the whole set at once, so a call sees one state
  // or the next, never a mix.
  TableSet tables_;
  at::Tensor cos_sin_index_;  // columns()' map, on the device of the last cos_sin call
  mutable detail::ModuleLock lock_;
};

TORCH_MODULE(YarnEmbedding);

// -- implementation ----------------------------------------------------------------------------

namespace detail {

// The policy's needed_length for a call on `first` and `second` (either may be null or
// undefined): their lengths are dim -2 of those with two dimensions or more.
inline std::optional<int64_t> needed_length(std::optional<int64_t> seq_len,
                                            const std::optional<at::Tensor>& positions,
                                            const at::Tensor* first,
                                            const at::Tensor* second = nullptr) {
  int64_t lengths[2];
  size_t count = 0;
  for (const at::Tensor* t : {first, second}) {
    if (t != nullptr && t->defined() && t->dim() >= 2) lengths[count++] = t->size(-2);
  }
  return policy::needed_length(seq_len, positions.has_value() && positions->defined(), lengths,
                               count);
}

}  // namespace detail

inline YarnEmbeddingImpl::YarnEmbeddingImpl(YarnEmbeddingOptions options_)
    : options(std::move(options_)) {
  const policy::ModuleConfig config = this->config();
  policy::check_config(config);
  tables_ = build(policy::initial_tables(config), options.device());
  // Made once, where the tables are: cos_sin copies nothing from the host.
  columns(tables_.cos_sin_cache.device());
}

inline void YarnEmbeddingImpl::reset_parameters() {
  const std::lock_guard<std::recursive_mutex> guard(lock_.mutex);
  const std::optional<c10::Device> device =
      tables_.inv_freq.defined() ? std::optional<c10::Device>(tables_.inv_freq.device())
                                 : options.device();
  tables_ = build(policy::initial_tables(config()), device);
  columns(tables_.cos_sin_cache.device());
}

inline policy::ModuleConfig YarnEmbeddingImpl::config() const {
  // Field by field, by name: a reordered struct cannot swap two options of one type.
  policy::ModuleConfig config;
  config.dim = options.dim();
  config.max_position_embeddings = options.max_position_embeddings();
  config.base = options.base();
  config.original_max_position_embeddings = options.original_max_position_embeddings();
  config.extrapolation_factor = options.extrapolation_factor();
  config.attn_factor = options.attn_factor();
  config.beta_fast = options.beta_fast();
  config.beta_slow = options.beta_slow();
  config.finetuned = options.finetuned();
  config.scaling_factor = options.scaling_factor();
  config.attention_factor = options.attention_factor();
  config.truncate = options.truncate();
  config.interleaved = options.interleaved();
  config.mrope_section = options.mrope_section();
  config.mrope_interleaved = options.mrope_interleaved();
  config.softmax_scale_factor = options.softmax_scale_factor();
  return config;
}

inline YarnEmbeddingImpl::TableSet YarnEmbeddingImpl::build(
    const policy::TablePlan& plan, std::optional<c10::Device> device) const {
  at::Tensor inv_freq = tables_.inv_freq;
  if (plan.new_frequencies) {
    inv_freq =
        yarn_inv_freq(options.dim(), options.base(), plan.scale,
                      options.original_max_position_embeddings(), options.extrapolation_factor(),
                      options.beta_fast(), options.beta_slow(), options.truncate());
    if (device.has_value()) inv_freq = inv_freq.to(*device);
  }
  at::Tensor cache = build_cos_sin_cache(inv_freq, plan.positions, plan.mscale);
  return {std::move(inv_freq), std::move(cache), plan.scale, plan.mscale};
}

inline YarnEmbeddingImpl::TableSet YarnEmbeddingImpl::current() const {
  const std::lock_guard<std::recursive_mutex> guard(lock_.mutex);
  return checked(tables_);
}

inline const YarnEmbeddingImpl::TableSet& YarnEmbeddingImpl::checked(const TableSet& tables) const {
  // The one state LibTorch can leave a module in without tables is a moved-from one (it has no
  // to_empty, and a move out of the meta device throws): refuse it rather than pass undefined
  // tensors to the kernels.
  if (!tables.inv_freq.defined() || !tables.cos_sin_cache.defined()) {
    throw std::runtime_error(
        "YarnEmbedding: this module holds no tables (it was moved from); call "
        "reset_parameters() to build them");
  }
  return tables;
}

inline const at::Tensor& YarnEmbeddingImpl::columns(c10::Device device) {
  // Made from the policy, not moved: a map on the meta device has no values to move.
  if (!cos_sin_index_.defined() || cos_sin_index_.device() != device) {
    cos_sin_index_ = at::tensor(policy::cos_sin_columns(options.dim(), options.interleaved()),
                                at::TensorOptions().dtype(at::kLong))
                         .to(device);
  }
  return cos_sin_index_;
}

inline std::optional<YarnEmbeddingImpl::TableSet> YarnEmbeddingImpl::grown(int64_t needed) const {
  const std::optional<policy::TablePlan> plan = policy::grown_tables(
      config(), tables_.scale, tables_.mscale, tables_.cos_sin_cache.size(0), needed);
  if (!plan.has_value()) return std::nullopt;
  return build(*plan, tables_.inv_freq.device());
}

inline at::Tensor YarnEmbeddingImpl::forward(const at::Tensor& x, std::optional<int64_t> seq_len,
                                             const std::optional<at::Tensor>& positions) {
  const std::optional<int64_t> needed = detail::needed_length(seq_len, positions, &x);
  const TableSet snapshot = current();
  if (!needed.has_value() || *needed <= snapshot.cos_sin_cache.size(0)) {
    return rotate(x, snapshot.cos_sin_cache, snapshot.inv_freq, snapshot.mscale, positions,
                  options.interleaved(), false, mrope(), options.mrope_interleaved());
  }
  const std::lock_guard<std::recursive_mutex> guard(lock_.mutex);
  std::optional<TableSet> grown_tables = grown(*needed);
  // A copy (two handles): a commit from this thread meanwhile cannot change what the call uses.
  const TableSet tables = grown_tables.has_value() ? *grown_tables : tables_;
  at::Tensor out = rotate(x, tables.cos_sin_cache, tables.inv_freq, tables.mscale, positions,
                          options.interleaved(), false, mrope(), options.mrope_interleaved());
  if (grown_tables.has_value()) tables_ = std::move(*grown_tables);  // the kernel succeeded
  return out;
}

inline std::pair<at::Tensor, std::optional<at::Tensor>> YarnEmbeddingImpl::rotate_(
    at::Tensor q, std::optional<at::Tensor> k, const std::optional<at::Tensor>& positions,
    std::optional<int64_t> seq_len) {
  const at::Tensor* k_ptr = k.has_value() ? &*k : nullptr;
  const std::optional<int64_t> needed = detail::needed_length(seq_len, positions, &q, k_ptr);
  const TableSet snapshot = current();
  if (!needed.has_value() || *needed <= snapshot.cos_sin_cache.size(0)) {
    rotate_inplace(q, k, snapshot.cos_sin_cache, snapshot.inv_freq, snapshot.mscale, positions,
                   options.interleaved(), mrope(), options.mrope_interleaved());
    return {std::move(q), std::move(k)};
  }
  const std::lock_guard<std::recursive_mutex> guard(lock_.mutex);
  std::optional<TableSet> grown_tables = grown(*needed);
  // A copy (two handles): a commit from this thread meanwhile cannot change what the call uses.
  const TableSet tables = grown_tables.has_value() ? *grown_tables : tables_;
  rotate_inplace(q, k, tables.cos_sin_cache, tables.inv_freq, tables.mscale, positions,
                 options.interleaved(), mrope(), options.mrope_interleaved());
  if (grown_tables.has_value()) tables_ = std::move(*grown_tables);  // the kernel succeeded
  return {std::move(q), std::move(k)};
}

inline at::Tensor YarnEmbeddingImpl::rotate_store_kv_(at::Tensor q, at::Tensor k,
                                                      const at::Tensor& v,
                                                      const at::Tensor& positions,
                                                      at::Tensor k_cache, at::Tensor v_cache,
                                                      const at::Tensor& slot_mapping,
                                                      const KvStoreOptions& kv) {
  const TableSet snapshot = current();
  rotate_store_kv(q, k, v, snapshot.cos_sin_cache, snapshot.inv_freq, snapshot.mscale, positions,
                  k_cache, v_cache, slot_mapping, kv, options.interleaved(), mrope(),
                  options.mrope_interleaved());
  return q;
}

inline std::pair<at::Tensor, at::Tensor> YarnEmbeddingImpl::cos_sin(
    int64_t seq_len, std::optional<at::ScalarType> dtype, std::optional<c10::Device> device) {
  const int64_t needed = *policy::needed_length(seq_len, /*has_positions=*/false, nullptr, 0);
  // Built from the (possibly grown) tables and committed last: a call that throws changes nothing.
  const std::lock_guard<std::recursive_mutex> guard(lock_.mutex);
  checked(tables_);
  std::optional<TableSet> grown_tables = grown(needed);
  // A copy (two handles): a commit from this thread meanwhile cannot change what the call uses.
  const TableSet tables = grown_tables.has_value() ? *grown_tables : tables_;
  const int64_t dim = options.dim();
  const at::Tensor& index = columns(tables.cos_sin_cache.device());
  const at::Tensor rows = tables.cos_sin_cache.narrow(0, 0, needed);
  // index_select makes each result a contiguous tensor of its own, as they have always been.
  auto finish = [&](int64_t first) {
    const at::Tensor t = rows.index_select(1, index.narrow(0, first, dim));
    return t.unsqueeze(0).unsqueeze(0).to(device.value_or(t.device()),
                                          dtype.value_or(t.scalar_type()));
  };
  std::pair<at::Tensor, at::Tensor> result{finish(0), finish(dim)};
  if (grown_tables.has_value()) tables_ = std::move(*grown_tables);
  return result;
}

inline std::pair<at::Tensor, at::Tensor> YarnEmbeddingImpl::cos_sin_at(
    const at::Tensor& positions, std::optional<at::ScalarType> dtype,
    std::optional<c10::Device> device) {
  const bool is_mrope = options.mrope_section().has_value();
  if (is_mrope && (positions.dim() < 1 || positions.size(0) != 3)) {
    throw std::invalid_argument(
        "YarnEmbedding.cos_sin: on an MRoPE embedding positions must carry the t, h and w "
        "components first ([3, ...]), got shape " +
        c10::str(positions.sizes()));
  }
  const TableSet tables = current();
  const int64_t dim = options.dim();
  // Rotating the unit vector (1, 0) of every pair gives (mscale cos, mscale sin) exactly, from
  // the cache or the float64 math, MRoPE included: the rotation's own values.
  at::Tensor unit = at::zeros({dim}, tables.inv_freq.options().dtype(at::kFloat));
  unit.narrow(0, 0, dim / 2).fill_(1);
  std::vector<int64_t> shape(positions.sizes().begin() + (is_mrope ? 1 : 0),
                             positions.sizes().end());
  shape.push_back(1);
  shape.push_back(dim);
  const at::Tensor rotated =
      rotate(unit.expand(shape), tables.cos_sin_cache, tables.inv_freq, tables.mscale,
             positions.unsqueeze(-1), false, false, mrope(), options.mrope_interleaved())
          .squeeze(-2);
  at::Tensor index;
  {
    const std::lock_guard<std::recursive_mutex> guard(lock_.mutex);
    index = columns(rotated.device());
  }
  auto finish = [&](int64_t first) {
    const at::Tensor t = rotated.index_select(-1, index.narrow(0, first, dim));
    return t.to(device.value_or(t.device()), dtype.value_or(t.scalar_type()));
  };
  return {finish(0), finish(dim)};
}

inline void YarnEmbeddingImpl::to(c10::Device device, bool non_blocking) {
  // Both moved before either is replaced: a failed move leaves the tables together.
  const std::lock_guard<std::recursive_mutex> guard(lock_.mutex);
  checked(tables_);
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
  const std::lock_guard<std::recursive_mutex> guard(lock_.mutex);
  stream << "yarn_ext::YarnEmbedding(dim=" << options.dim() << ", base=" << options.base();
  if (tables_.cos_sin_cache.defined()) {
    stream << ", scale=" << tables_.scale << ", mscale=" << tables_.mscale
           << ", max_seq_len_cached=" << tables_.cos_sin_cache.size(0);
  } else {
    stream << ", no tables";
  }
  stream << ", interleaved=" << (options.interleaved() ? "true" : "false");
  if (options.mrope_section().has_value()) {
    stream << ", mrope_section=" << c10::IntArrayRef(*options.mrope_section())
           << ", mrope_interleaved=" << (options.mrope_interleaved() ? "true" : "false");
  }
  if (options.softmax_scale_factor() != 1.0) {
    stream << ", softmax_scale_factor=" << options.softmax_scale_factor();
  }
  stream << ")";
}

}  // namespace yarn_ext

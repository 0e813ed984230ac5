// The policy of YarnEmbedding, written once for its two implementations: the Python module
// (yarn_ext/embedding.py, through the bindings in yarn_ext._C) and the header-only C++ module
// (yarn_embedding.h). Torch-free and header-only like helper_math.h, for the same reason: _C has
// no torch in it. The modules only hold state (the tables, a lock) and call what is here:
//
//   - check_config: every value check of the constructor, with one message per argument;
//   - initial_tables / grown_tables: which tables a module holds at construction, and when and
//     how a call that needs more positions grows them (dynamic YaRN, or only a longer cache);
//   - needed_length: how many cached positions a call needs;
//   - cos_sin_columns: the layout of cos_sin's results.
//
// What stays in the modules, because tensors and locks live there: turning a TablePlan into
// tables (yarn_inv_freq for new frequencies, build_cos_sin_cache for the cache), and the growth
// protocol. Under the module's lock: plan with grown_tables from the current state, build the
// planned tables, run the call's kernel with them, and only then, if the kernel succeeded,
// replace the current tables with them in one assignment. A call that throws changes nothing,
// and a call that reads the tables without the lock sees one state or the next, never a mix.
//
// A bad argument throws std::invalid_argument (ValueError in Python) whose message starts with
// "YarnEmbedding: " and names the argument, the same text from both modules.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "yarn_ext/helper_math.h"
#include "yarn_ext/mrope_section.h"

namespace yarn_ext::policy {

inline constexpr const char* kModule = "YarnEmbedding";

// Every constructor option but the device. No defaults here: the modules own theirs (Python's
// signature, YarnEmbeddingOptions) and set every field.
struct ModuleConfig {
  int64_t dim = 0;
  int64_t max_position_embeddings = 0;
  double base = 0;
  int64_t original_max_position_embeddings = 0;
  double extrapolation_factor = 0;
  double attn_factor = 0;
  double beta_fast = 0;
  double beta_slow = 0;
  bool finetuned = false;
  std::optional<double> scaling_factor;
  std::optional<double> attention_factor;
  bool truncate = true;
  bool interleaved = false;
  // MRoPE (core/mrope.h): the pairs that follow each of a token's t, h and w positions, in runs
  // or interleaved; absent for plain RoPE.
  std::optional<std::vector<int64_t>> mrope_section;
  bool mrope_interleaved = false;
  // What the attention's softmax scale is multiplied by (DeepSeek's mscale_all_dim correction,
  // get_mscale(factor, mscale_all_dim)^2); stored for the model, not used by the rotation.
  double softmax_scale_factor = 1.0;
};

// The constructor's value checks, so that a bad option fails at construction naming itself
// rather than at the first growth. The frequency arguments are checked as yarn_inv_freq checks
// them (the same function), with the module's name in the message.
inline void check_config(const ModuleConfig& config) {
  using helper_math::require;
  helper_math::check_frequency_args(
      kModule, config.dim, config.base, config.original_max_position_embeddings,
      config.extrapolation_factor, config.beta_fast, config.beta_slow);
  require(config.max_position_embeddings > 0, kModule,
          "max_position_embeddings must be positive, got ", config.max_position_embeddings);
  require(std::isfinite(config.attn_factor), kModule, "attn_factor must be finite, got ",
          config.attn_factor);
  if (config.scaling_factor.has_value()) {
    // Without finetuned the module starts as plain RoPE, so a static scale would be ignored.
    require(config.finetuned, kModule, "scaling_factor is only used with finetuned (static YaRN)");
    const double s = *config.scaling_factor;
    require(std::isfinite(s) && s > 0, kModule, "scaling_factor must be a finite number > 0, got ",
            s);
  }
  if (config.attention_factor.has_value()) {
    require(std::isfinite(*config.attention_factor), kModule,
            "attention_factor must be finite, got ", *config.attention_factor);
  }
  if (config.mrope_section.has_value()) {
    helper_math::check_mrope_section(kModule, *config.mrope_section, config.mrope_interleaved,
                                     config.dim / 2);
  } else {
    require(!config.mrope_interleaved, kModule, "mrope_interleaved needs mrope_section");
  }
  require(std::isfinite(config.softmax_scale_factor) && config.softmax_scale_factor > 0, kModule,
          "softmax_scale_factor must be a finite number > 0, got ", config.softmax_scale_factor);
}

// The tables a module should hold. new_frequencies: inv_freq = yarn_inv_freq at `scale`; else
// the current inv_freq is kept (and so are scale and mscale). The cache is
// build_cos_sin_cache(inv_freq, positions, mscale).
struct TablePlan {
  bool new_frequencies;
  double scale;  // 1 for plain RoPE
  double mscale;
  int64_t positions;
};

// At construction (config checked): plain RoPE (scale 1, mscale 1 as in Zeta, unless
// attention_factor) when not finetuned; static YaRN at scaling_factor, else
// max_position_embeddings / original_max_position_embeddings, when finetuned.
inline TablePlan initial_tables(const ModuleConfig& config) {
  std::optional<double> scale;
  if (config.finetuned) {
    scale = config.scaling_factor.value_or(
        static_cast<double>(config.max_position_embeddings) /
        static_cast<double>(config.original_max_position_embeddings));
  }
  return {true, scale.value_or(1.0),
          helper_math::table_mscale(scale, config.attn_factor, config.attention_factor),
          config.max_position_embeddings};
}

// For a call that needs `needed` positions, given the current tables (their scale and mscale, and
// `cached` positions): nothing when they serve it; else new frequencies at seq_len / original when
// that raises the scale (dynamic YaRN, as in Zeta), or else the same frequencies and a longer
// cache (helper_math::grown_scale says why the scale never drops). The cache only grows.
inline std::optional<TablePlan> grown_tables(const ModuleConfig& config, double current_scale,
                                             double current_mscale, int64_t cached,
                                             int64_t needed) {
  if (needed <= cached) return std::nullopt;
  if (const std::optional<double> scale = helper_math::grown_scale(
          needed, config.original_max_position_embeddings, current_scale)) {
    return TablePlan{true, *scale,
                     helper_math::table_mscale(scale, config.attn_factor, config.attention_factor),
                     needed};
  }
  return TablePlan{false, current_scale, current_mscale, needed};
}

// The number of cached positions a call needs: seq_len when given (it must be positive); else,
// with explicit positions, nothing (positions past the cache are computed on the fly, and nothing
// is read back to the host); else the longest of `lengths` - dim -2 of each of the call's tensors
// that has at least two dimensions (row s gets position s) - or nothing when there is none.
// The Python module keeps a symbolic copy of this rule (embedding.py, _needed_length) so that
// torch.compile traces it without a call into _C; tests/test_module_parity.py holds them equal.
inline std::optional<int64_t> needed_length(std::optional<int64_t> seq_len, bool has_positions,
                                            const int64_t* lengths, size_t count) {
  if (seq_len.has_value()) {
    helper_math::require(*seq_len > 0, kModule, "seq_len must be positive, got ", *seq_len);
    return seq_len;
  }
  if (has_positions || count == 0) return std::nullopt;
  return *std::max_element(lengths, lengths + count);
}

inline std::optional<int64_t> needed_length(std::optional<int64_t> seq_len, bool has_positions,
                                            const std::vector<int64_t>& lengths) {
  return needed_length(seq_len, has_positions, lengths.data(), lengths.size());
}

// cos_sin's layout as a column map of the cache (float32 [positions, dim]: mscale * cos in columns
// [0, dim / 2), mscale * sin in [dim / 2, dim)): 2 * dim entries, the cache columns of cos's dim
// columns and then of sin's, so that one index_select of the cache rows builds both. The layout
// matches the rotation style: cat(freqs, freqs) (Zeta's) by default, each frequency twice in a
// row when interleaved.
inline std::vector<int64_t> cos_sin_columns(int64_t dim, bool interleaved) {
  helper_math::check_rotary_dim(kModule, dim);
  const int64_t half = dim / 2;
  std::vector<int64_t> columns(static_cast<size_t>(2 * dim));
  for (int64_t j = 0; j < dim; ++j) {
    const int64_t frequency = interleaved ? j / 2 : j % half;
    columns[static_cast<size_t>(j)] = frequency;
    columns[static_cast<size_t>(dim + j)] = half + frequency;
  }
  return columns;
}

}  // namespace yarn_ext::policy

// The table policy of YarnEmbedding - which scale and attention factor a cache is built with -
// written once for the C++ module and the Python one (which calls these through yarn_ext._C).
#pragma once

#include "yarn_ext/library_anchor.h"

#include <cstdint>
#include <optional>

namespace yarn_ext {

// The attention scale multiplying cos and sin: attention_factor when given; 1 for plain RoPE
// (scale absent, as in Zeta); else get_mscale(scale) * attn_factor.
double table_mscale(std::optional<double> scale, double attn_factor,
                    std::optional<double> attention_factor);

// The scale a cache grown to seq_len positions uses: seq_len / original when that raises the
// current scale (dynamic YaRN, as in Zeta), else nothing - keep the frequencies and only extend
// the cache, because lowering the scale (even below 1, as Zeta would) breaks positions the model
// was trained on.
std::optional<double> grown_scale(int64_t seq_len, int64_t original_max_position_embeddings,
                                  double current_scale);

}  // namespace yarn_ext

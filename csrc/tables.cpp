#include "yarn_ext/tables.h"

#include "yarn_ext/helpers.h"

namespace yarn_ext {

double table_mscale(std::optional<double> scale, double attn_factor,
                    std::optional<double> attention_factor) {
  if (attention_factor.has_value()) return *attention_factor;
  if (!scale.has_value()) return 1.0;
  return get_mscale(*scale) * attn_factor;
}

std::optional<double> grown_scale(int64_t seq_len, int64_t original_max_position_embeddings,
                                  double current_scale) {
  const double scale =
      static_cast<double>(seq_len) / static_cast<double>(original_max_position_embeddings);
  if (scale > current_scale) return scale;
  return std::nullopt;
}

}  // namespace yarn_ext

// Builds a YarnEmbedding from Qwen3's YaRN configuration (rope_theta 1e6, factor 4 over a 32768
// token original context, head_dim 128), rotates q and k in place at positions up to 131071, and
// checks the result against its own plain float64 computation of the YaRN rotation.
#include <torch/torch.h>
#include <yarn_ext/yarn_ext.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

namespace {

// YaRN's inverse frequencies, written out from the paper's formulas (Zeta's form).
std::vector<double> yarn_frequencies(int dim, double base, double factor, int original) {
  const double kPi = std::acos(-1.0);
  auto correction_dim = [&](double rotations) {
    return dim * std::log(original / (rotations * 2 * kPi)) / (2 * std::log(base));
  };
  const double low = std::max(std::floor(correction_dim(32)), 0.0);
  const double high = std::min(std::ceil(correction_dim(1)), dim - 1.0);
  std::vector<double> inv_freq(dim / 2);
  for (int i = 0; i < dim / 2; ++i) {
    const double extrapolation = 1.0 / std::pow(base, 2.0 * i / dim);
    const double interpolation = extrapolation / factor;
    const double ramp = std::clamp((i - low) / std::max(high - low, 0.001), 0.0, 1.0);
    const double mask = 1.0 - ramp;  // 1: keep the original frequency (high-frequency dims)
    inv_freq[i] = interpolation * (1 - mask) + extrapolation * mask;
  }
  return inv_freq;
}

}  // namespace

int main() {
  constexpr int kDim = 128, kOriginal = 32768, kTokens = 64;
  constexpr double kBase = 1e6, kFactor = 4.0;
  yarn_ext::YarnEmbedding rope(yarn_ext::YarnEmbeddingOptions(kDim)
                                   .max_position_embeddings(kOriginal * 4)
                                   .base(kBase)
                                   .original_max_position_embeddings(kOriginal)
                                   .finetuned(true));
  std::printf("yarn_ext %s: %s\n", YARN_EXT_VERSION, c10::str(*rope).c_str());

  torch::manual_seed(0);
  torch::Tensor q = torch::randn({kTokens, 32, kDim});  // [tokens, heads, head_dim]
  torch::Tensor k = torch::randn({kTokens, 8, kDim});
  torch::Tensor positions = torch::randint(0, kOriginal * 4, {kTokens, 1}, torch::kLong);
  const torch::Tensor q_in = q.clone(), k_in = k.clone();
  rope->rotate_(q, k, positions);

  const std::vector<double> inv_freq = yarn_frequencies(kDim, kBase, kFactor, kOriginal);
  const double mscale = 0.1 * std::log(kFactor) + 1.0;
  double worst = 0;
  for (const auto& [in, out] : {std::pair{q_in, q}, std::pair{k_in, k}}) {
    auto x = in.accessor<float, 3>();
    auto y = out.accessor<float, 3>();
    for (int t = 0; t < kTokens; ++t) {
      const double p = static_cast<double>(positions[t][0].item<int64_t>());
      for (int h = 0; h < in.size(1); ++h) {
        for (int i = 0; i < kDim / 2; ++i) {
          const double c = std::cos(p * inv_freq[i]) * mscale,
                       s = std::sin(p * inv_freq[i]) * mscale;
          const double a = x[t][h][i], b = x[t][h][i + kDim / 2];
          worst = std::max(worst, std::abs(y[t][h][i] - (a * c - b * s)));
          worst = std::max(worst, std::abs(y[t][h][i + kDim / 2] - (b * c + a * s)));
        }
      }
    }
  }
  const bool ok = worst < 2e-5;
  std::printf("max |error| against plain float64 YaRN: %.2e (%s)\n", worst, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}

// Test hook, built only for the tests (tests/native/; never in the wheel or the CMake package):
// the C++ module yarn_ext::YarnEmbedding - the header-only C++ API, compiled here against this
// torch's LibTorch - driven from Python, so that tests/test_package.py can compare it with the
// Python module bit for bit.
#include <torch/extension.h>

#include <optional>
#include <tuple>
#include <vector>

#include "yarn_ext/yarn_embedding.h"

namespace py = pybind11;

namespace {

using ForwardCall = std::tuple<at::Tensor, std::optional<int64_t>, std::optional<at::Tensor>>;

// YarnEmbeddingOptions from the Python constructor's keyword arguments. An argument that is
// absent (or None) keeps the option's own default, so the defaults live in one place.
yarn_ext::YarnEmbeddingOptions module_options(const py::dict& kwargs) {
  yarn_ext::YarnEmbeddingOptions options(kwargs["dim"].cast<int64_t>());
  auto given = [&](const char* key) { return kwargs.contains(key) && !kwargs[key].is_none(); };
  auto as_int = [&](const char* key) { return kwargs[key].cast<int64_t>(); };
  auto as_float = [&](const char* key) { return kwargs[key].cast<double>(); };
  auto as_bool = [&](const char* key) { return kwargs[key].cast<bool>(); };
  if (given("max_position_embeddings")) {
    options.max_position_embeddings(as_int("max_position_embeddings"));
  }
  if (given("base")) options.base(as_float("base"));
  if (given("original_max_position_embeddings")) {
    options.original_max_position_embeddings(as_int("original_max_position_embeddings"));
  }
  if (given("extrapolation_factor")) options.extrapolation_factor(as_float("extrapolation_factor"));
  if (given("attn_factor")) options.attn_factor(as_float("attn_factor"));
  if (given("beta_fast")) options.beta_fast(as_float("beta_fast"));
  if (given("beta_slow")) options.beta_slow(as_float("beta_slow"));
  if (given("finetuned")) options.finetuned(as_bool("finetuned"));
  if (given("scaling_factor")) options.scaling_factor(as_float("scaling_factor"));
  if (given("attention_factor")) options.attention_factor(as_float("attention_factor"));
  if (given("truncate")) options.truncate(as_bool("truncate"));
  if (given("interleaved")) options.interleaved(as_bool("interleaved"));
  return options;
}

}  // namespace

PYBIND11_MODULE(yarn_ext_module_hook, m) {
  // The module built from the Python constructor's keyword arguments, then forward(x, seq_len,
  // positions) for each call, rotate_(q, k, positions) and cos_sin(cos_sin_len); returns the
  // results and the final tables.
  m.def("module_calls", [](const py::dict& kwargs, const std::vector<ForwardCall>& forwards,
                           at::Tensor q, std::optional<at::Tensor> k,
                           const std::optional<at::Tensor>& positions, int64_t cos_sin_len) {
    yarn_ext::YarnEmbedding rope(module_options(kwargs));
    std::vector<at::Tensor> outputs;
    for (const auto& [x, seq_len, x_positions] : forwards) {
      outputs.push_back(rope->forward(x, seq_len, x_positions));
    }
    rope->rotate_(q, k, positions);
    const auto [cos, sin] = rope->cos_sin(cos_sin_len);
    return py::make_tuple(outputs, cos, sin, rope->inv_freq(), rope->cos_sin_cache(), rope->scale(),
                          rope->mscale());
  });
}

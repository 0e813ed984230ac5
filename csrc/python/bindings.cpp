// The Python extension module yarn_ext._C: pybind11 bindings of the helper functions, and the
// test hooks. The kernels and the operator registrations live in the Python-free library
// libyarn_ext (yarn_ext/lib/), which _C links: loading _C loads it, and its TORCH_LIBRARY
// registrations make the operators available as torch.ops.yarn_ext.*. The typed Python API
// lives in yarn_ext/.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/extension.h>

#include <string>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/cuda_emulation.h"
#include "rotate_args.h"
#include "yarn_ext/helpers.h"
#include "yarn_ext/tables.h"
#include "yarn_ext/yarn_embedding.h"

namespace py = pybind11;

namespace {

py::list launch_dicts(const std::vector<yarn_ext::testing::EmulatedLaunch>& launches) {
  py::list out;
  for (const auto& launch : launches) {
    py::dict d;
    d["path"] = launch.path;
    d["grid"] = py::make_tuple(launch.grid_x, launch.grid_y);
    d["block"] = py::make_tuple(launch.block_x, launch.block_y);
    d["heads_per_slice"] = launch.heads_per_slice;
    d["operands"] = launch.operands;
    out.append(d);
  }
  return out;
}

// The dispatch keys that have a yarn_ext::rotate kernel in this build, for `python -m yarn_ext`.
std::vector<std::string> built_backends() {
  std::vector<std::string> keys;
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("yarn_ext::rotate", "");
  for (const char* key : {"CPU", "CUDA", "Meta"}) {
    if (op.hasKernelForDispatchKey(c10::parseDispatchKey(key))) keys.emplace_back(key);
  }
  return keys;
}

using ForwardCall = std::tuple<at::Tensor, std::optional<int64_t>, std::optional<at::Tensor>>;

// YarnEmbeddingOptions from the Python constructor's keyword arguments (test hook). An argument
// that is absent (or None) keeps the option's own default, so the defaults live in one place.
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

PYBIND11_MODULE(_C, m) {
  m.doc() = "yarn_ext native extension: helper bindings; operators under torch.ops.yarn_ext";
  m.def("find_correction_dim", &yarn_ext::find_correction_dim, py::arg("num_rotations"),
        py::arg("dim"), py::arg("base"), py::arg("max_position_embeddings"));
  m.def(
      "find_correction_range",
      [](double low_rot, double high_rot, int64_t dim, double base, int64_t max_position_embeddings,
         bool truncate) -> py::tuple {
        if (truncate) {
          const auto [low, high] = yarn_ext::find_correction_range(low_rot, high_rot, dim, base,
                                                                   max_position_embeddings);
          return py::make_tuple(low, high);
        }
        const auto [low, high] = yarn_ext::find_correction_range_fractional(
            low_rot, high_rot, dim, base, max_position_embeddings);
        return py::make_tuple(low, high);
      },
      py::arg("low_rot"), py::arg("high_rot"), py::arg("dim"), py::arg("base"),
      py::arg("max_position_embeddings"), py::arg("truncate"));
  m.def("linear_ramp_mask", &yarn_ext::linear_ramp_mask, py::arg("min"), py::arg("max"),
        py::arg("dim"));
  m.def("get_mscale", &yarn_ext::get_mscale, py::arg("scale"), py::arg("mscale"));
  m.def("yarn_inv_freq", &yarn_ext::yarn_inv_freq, py::arg("dim"), py::arg("base"),
        py::arg("scale"), py::arg("original_max_position_embeddings"),
        py::arg("extrapolation_factor"), py::arg("beta_fast"), py::arg("beta_slow"),
        py::arg("truncate"));
  m.def("table_mscale", &yarn_ext::table_mscale, py::arg("scale"), py::arg("attn_factor"),
        py::arg("attention_factor"));
  m.def("grown_scale", &yarn_ext::grown_scale, py::arg("seq_len"),
        py::arg("original_max_position_embeddings"), py::arg("current_scale"));
  m.def("built_backends", &built_backends);
  m.def(
      "cpu_kernels", [] { return std::string(yarn_ext::cpu::kernels().name); },
      "The instruction set of the CPU kernels in use: DEFAULT, AVX2 or AVX512 (ATen's CPU "
      "capability, which the ATEN_CPU_CAPABILITY environment variable can lower).");
  // Test hook (tests/test_package.py): the C++ module yarn_ext::YarnEmbedding, built from the
  // Python constructor's keyword arguments, then forward(x, seq_len, positions) for each call,
  // rotate_(q, k, positions) and cos_sin(cos_sin_len); returns the results and the final tables,
  // to compare with the Python module bit for bit.
  m.def("_cpp_module_calls", [](const py::dict& kwargs, const std::vector<ForwardCall>& forwards,
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
  // The CUDA launcher's path switch (rotate_args.h): benchmarks/rotation.py measures the
  // generic path with it off.
  m.def("_set_cuda_token_path", &yarn_ext::detail::set_cuda_token_path, py::arg("enabled"));
  // Test hook: the token path's plan for given sizes, without tensors (its 32-bit limits).
  m.def(
      "_plan_token_launch",
      [](int64_t num_tokens, int64_t total_heads, int64_t items_per_row, int sm_count) {
        const auto plan =
            yarn_ext::testing::plan_token_launch(num_tokens, total_heads, items_per_row, sm_count);
        return py::make_tuple(plan.fits, plan.fits ? py::object(launch_dicts({plan.launch})[0])
                                                   : py::object(py::none()));
      },
      py::arg("num_tokens"), py::arg("total_heads"), py::arg("items_per_row"),
      py::arg("sm_count") = 132);
  // Test hooks (tests/test_cuda_emulation.py): the CUDA kernels' work, run on the CPU. Each
  // returns the launches the CUDA launcher would make, as dicts (path, geometry).
  m.def(
      "_emulate_cuda_rotate",
      [](const at::Tensor& x, const at::Tensor& cache, const at::Tensor& inv_freq, double mscale,
         const std::optional<at::Tensor>& positions, bool interleaved, bool inverse, int sm_count) {
        at::Tensor out;
        const auto launches = yarn_ext::testing::emulate_cuda_rotate(
            x, out, cache, inv_freq, mscale, positions, interleaved, inverse, sm_count);
        return py::make_tuple(out, launch_dicts(launches));
      },
      py::arg("x"), py::arg("cache"), py::arg("inv_freq"), py::arg("mscale"), py::arg("positions"),
      py::arg("interleaved"), py::arg("inverse") = false, py::arg("sm_count") = 132);
  m.def(
      "_emulate_cuda_rotate_inplace",
      [](const at::Tensor& q, const std::optional<at::Tensor>& k, const at::Tensor& cache,
         const at::Tensor& inv_freq, double mscale, const std::optional<at::Tensor>& positions,
         bool interleaved, int sm_count) {
        return launch_dicts(yarn_ext::testing::emulate_cuda_rotate_inplace(
            q, k, cache, inv_freq, mscale, positions, interleaved, sm_count));
      },
      py::arg("q"), py::arg("k"), py::arg("cache"), py::arg("inv_freq"), py::arg("mscale"),
      py::arg("positions"), py::arg("interleaved"), py::arg("sm_count") = 132);
}

// The Python extension module yarn_ext._C: pybind11 bindings of the helper functions
// (yarn_ext/helper_math.h) and of YarnEmbedding's policy (yarn_ext/table_policy.h). No torch in
// it - it depends on the Python version only; a helper that returns a tensor returns its values
// and yarn_ext/helpers.py builds the tensor.
// The operators live in libyarn_ext (and libyarn_ext_cuda), which yarn_ext/_loader.py loads.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "yarn_ext/core/mrope.h"
#include "yarn_ext/helper_math.h"
#include "yarn_ext/mrope_section.h"
#include "yarn_ext/table_policy.h"

namespace py = pybind11;
namespace hm = yarn_ext::helper_math;
namespace policy = yarn_ext::policy;

PYBIND11_MODULE(_C, m) {
  m.doc() = "yarn_ext helper bindings (no torch); operators under torch.ops.yarn_ext";
  m.def("find_correction_dim", &hm::find_correction_dim, py::arg("num_rotations"), py::arg("dim"),
        py::arg("base"), py::arg("max_position_embeddings"));
  m.def(
      "find_correction_range",
      [](double low_rot, double high_rot, int64_t dim, double base, int64_t max_position_embeddings,
         bool truncate) -> py::tuple {
        const auto [low, high] = hm::find_correction_range(low_rot, high_rot, dim, base,
                                                           max_position_embeddings, truncate);
        // Whole numbers when truncated (floor / ceil, clamped to [0, dim - 1]).
        if (truncate) {
          return py::make_tuple(static_cast<int64_t>(low), static_cast<int64_t>(high));
        }
        return py::make_tuple(low, high);
      },
      py::arg("low_rot"), py::arg("high_rot"), py::arg("dim"), py::arg("base"),
      py::arg("max_position_embeddings"), py::arg("truncate"));
  m.def("linear_ramp_mask", &hm::linear_ramp_mask, py::arg("min"), py::arg("max"), py::arg("dim"));
  m.def("get_mscale", &hm::get_mscale, py::arg("scale"), py::arg("mscale"));
  m.def("yarn_inv_freq", &hm::yarn_inv_freq, py::arg("dim"), py::arg("base"), py::arg("scale"),
        py::arg("original_max_position_embeddings"), py::arg("extrapolation_factor"),
        py::arg("beta_fast"), py::arg("beta_slow"), py::arg("truncate"));

  // The module's policy (table_policy.h), called by yarn_ext/embedding.py.
  py::class_<policy::ModuleConfig>(m, "ModuleConfig")
      .def(py::init([](int64_t dim, int64_t max_position_embeddings, double base,
                       int64_t original_max_position_embeddings, double extrapolation_factor,
                       double attn_factor, double beta_fast, double beta_slow, bool finetuned,
                       std::optional<double> scaling_factor, std::optional<double> attention_factor,
                       bool truncate, bool interleaved,
                       std::optional<std::vector<int64_t>> mrope_section, bool mrope_interleaved,
                       double softmax_scale_factor) {
             policy::ModuleConfig config;
             config.dim = dim;
             config.max_position_embeddings = max_position_embeddings;
             config.base = base;
             config.original_max_position_embeddings = original_max_position_embeddings;
             config.extrapolation_factor = extrapolation_factor;
             config.attn_factor = attn_factor;
             config.beta_fast = beta_fast;
             config.beta_slow = beta_slow;
             config.finetuned = finetuned;
             config.scaling_factor = scaling_factor;
             config.attention_factor = attention_factor;
             config.truncate = truncate;
             config.interleaved = interleaved;
             config.mrope_section = std::move(mrope_section);
             config.mrope_interleaved = mrope_interleaved;
             config.softmax_scale_factor = softmax_scale_factor;
             return config;
           }),
           // Keyword-only and without defaults: the Python module owns the defaults.
           py::kw_only(), py::arg("dim"), py::arg("max_position_embeddings"), py::arg("base"),
           py::arg("original_max_position_embeddings"), py::arg("extrapolation_factor"),
           py::arg("attn_factor"), py::arg("beta_fast"), py::arg("beta_slow"), py::arg("finetuned"),
           py::arg("scaling_factor"), py::arg("attention_factor"), py::arg("truncate"),
           py::arg("interleaved"), py::arg("mrope_section"), py::arg("mrope_interleaved"),
           py::arg("softmax_scale_factor"));
  py::class_<policy::TablePlan>(m, "TablePlan")
      .def_readonly("new_frequencies", &policy::TablePlan::new_frequencies)
      .def_readonly("scale", &policy::TablePlan::scale)
      .def_readonly("mscale", &policy::TablePlan::mscale)
      .def_readonly("positions", &policy::TablePlan::positions);
  m.def("check_config", &policy::check_config, py::arg("config"));
  m.def("initial_tables", &policy::initial_tables, py::arg("config"));
  m.def("grown_tables", &policy::grown_tables, py::arg("config"), py::arg("current_scale"),
        py::arg("current_mscale"), py::arg("cached"), py::arg("needed"));
  m.def("needed_length",
        py::overload_cast<std::optional<int64_t>, bool, const std::vector<int64_t>&>(
            &policy::needed_length),
        py::arg("seq_len"), py::arg("has_positions"), py::arg("lengths"));
  m.def("cos_sin_columns", &policy::cos_sin_columns, py::arg("dim"), py::arg("interleaved"));
  // The MRoPE layout as the kernels read it: the component (0 t, 1 h, 2 w) of each pair.
  m.def(
      "mrope_components",
      [](const std::vector<int64_t>& sections, bool interleaved, int64_t half) {
        const yarn_ext::MropeLayout layout =
            hm::check_mrope_section("mrope_components", sections, interleaved, half);
        std::vector<int> components(static_cast<size_t>(half));
        for (int64_t pair = 0; pair < half; ++pair) {
          components[static_cast<size_t>(pair)] = yarn_ext::mrope_component(layout, pair);
        }
        return components;
      },
      py::arg("sections"), py::arg("interleaved"), py::arg("half"));
}

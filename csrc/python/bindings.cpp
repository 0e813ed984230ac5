// The Python extension module yarn_ext._C: pybind11 bindings of the helper functions and the
// table policy (yarn_ext/helper_math.h). No torch in it - it depends on the Python version only;
// a helper that returns a tensor returns its values and yarn_ext/helpers.py builds the tensor.
// The operators live in libyarn_ext (and libyarn_ext_cuda), which yarn_ext/_loader.py loads.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "yarn_ext/helper_math.h"

namespace py = pybind11;
namespace hm = yarn_ext::helper_math;

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
  m.def("table_mscale", &hm::table_mscale, py::arg("scale"), py::arg("attn_factor"),
        py::arg("attention_factor"));
  m.def("grown_scale", &hm::grown_scale, py::arg("seq_len"),
        py::arg("original_max_position_embeddings"), py::arg("current_scale"));
}

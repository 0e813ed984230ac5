// Operator schemas: the one place they are declared. Kernels are registered per dispatch key
// (cpu/, cuda/); the fake (tracing) implementations and the backward are registered from Python
// (yarn_ext/_registrations.py), and for C++ programs the autograd function is a header
// (yarn_ext/autograd.h).
#include <torch/csrc/stable/library.h>

#include "export.h"

STABLE_TORCH_LIBRARY(yarn_ext, m) {
  m.def("build_cos_sin_cache(Tensor inv_freq, SymInt num_positions, float mscale) -> Tensor");
  // inverse=True rotates by -angle (the transpose of the rotation, times mscale): the backward.
  // mrope_section (three pair counts) makes it MRoPE (core/mrope.h): positions may then carry
  // the t, h and w components in one more leading dimension.
  m.def(
      "rotate(Tensor x, Tensor cos_sin_cache, Tensor inv_freq, float mscale, "
      "Tensor? positions=None, bool interleaved=False, bool inverse=False, "
      "int[]? mrope_section=None, bool mrope_interleaved=False) -> Tensor");
  // q and k are rotated in place (marked mutable); nothing is returned, as in vLLM's kernel.
  m.def(
      "rotate_inplace(Tensor(a!) q, Tensor(b!)? k, Tensor cos_sin_cache, Tensor inv_freq, "
      "float mscale, Tensor? positions=None, bool interleaved=False, "
      "int[]? mrope_section=None, bool mrope_interleaved=False) -> ()");
}

// Referenced by the C++ API's headers (yarn_ext/library_anchor.h), so that a program that uses
// them keeps the library - and its registrations - linked even under --as-needed.
extern "C" YARN_EXT_API int yarn_ext_library_anchor() {
  return 0;
}

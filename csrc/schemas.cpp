// Operator schemas: the one place they are declared. Kernels are registered per dispatch key
// (cpu/, cuda/); the fake (tracing) implementations and the backward are registered from Python
// (yarn_ext/_registrations.py), and for C++ programs the autograd function is a header
// (yarn_ext/autograd.h).
#include <torch/csrc/stable/library.h>

#include "export.h"

STABLE_TORCH_LIBRARY(yarn_ext, m) {
  m.def("build_cos_sin_cache(Tensor inv_freq, SymInt num_positions, float mscale) -> Tensor");
  // inverse=True rotates by -angle (the transpose of the rotation, times mscale): the backward.
  m.def(
      "rotate(Tensor x, Tensor cos_sin_cache, Tensor inv_freq, float mscale, "
      "Tensor? positions=None, bool interleaved=False, bool inverse=False) -> Tensor");
  // q and k are rotated in place (marked mutable); nothing is returned, as in vLLM's kernel.
  m.def(
      "rotate_inplace(Tensor(a!) q, Tensor(b!)? k, Tensor cos_sin_cache, Tensor inv_freq, "
      "float mscale, Tensor? positions=None, bool interleaved=False) -> ()");
  // MRoPE (core/mrope.h): mrope_section gives the pairs that follow a token's t, h and w
  // positions, which may come in one more leading dimension of positions. Overloads of their
  // own, so that a plain call parses no MRoPE argument (each costs a decode step time).
  m.def(
      "rotate.mrope(Tensor x, Tensor cos_sin_cache, Tensor inv_freq, float mscale, "
      "Tensor? positions, bool interleaved, bool inverse, int[] mrope_section, "
      "bool mrope_interleaved) -> Tensor");
  m.def(
      "rotate_inplace.mrope(Tensor(a!) q, Tensor(b!)? k, Tensor cos_sin_cache, Tensor inv_freq, "
      "float mscale, Tensor? positions, bool interleaved, int[] mrope_section, "
      "bool mrope_interleaved) -> ()");
}

// Referenced by the C++ API's headers (yarn_ext/library_anchor.h), so that a program that uses
// them keeps the library - and its registrations - linked even under --as-needed.
extern "C" YARN_EXT_API int yarn_ext_library_anchor() {
  return 0;
}

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
  // Serving: q and k normalized per head (RMSNorm, when weights are given) and rotated, q in
  // place, the rotated k and v written to paged caches [num_blocks, block_size, heads, head_dim]
  // at slot_mapping (-1: padding), quantized for a float8_e4m3fn cache (k_scale, v_scale). k is
  // written only with write_k. invalid_slots: an int32 counter of one element, which the CUDA
  // kernel adds the tokens whose slot lies outside the caches to (it skips their k and v; the
  // CPU kernel refuses such a slot). (The KV-cache fusion of csrc/kv_store_plan.h.)
  m.def(
      "rotate_store_kv(Tensor(a!) q, Tensor(b!) k, Tensor v, Tensor cos_sin_cache, "
      "Tensor inv_freq, float mscale, Tensor positions, Tensor(c!) k_cache, Tensor(d!) v_cache, "
      "Tensor slot_mapping, Tensor? q_norm_weight=None, Tensor? k_norm_weight=None, "
      "float eps=1e-6, bool norm_unit_offset=False, Tensor? k_scale=None, Tensor? v_scale=None, "
      "bool interleaved=False, bool write_k=False, int[]? mrope_section=None, "
      "bool mrope_interleaved=False, Tensor(e!)? invalid_slots=None) -> ()");
}

// Referenced by the C++ API's headers (yarn_ext/library_anchor.h), so that a program that uses
// them keeps the library - and its registrations - linked even under --as-needed.
extern "C" YARN_EXT_API int yarn_ext_library_anchor() {
  return 0;
}

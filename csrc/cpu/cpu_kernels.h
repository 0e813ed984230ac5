// The CPU kernels' inner loops, compiled once per instruction set (vectorized/kernels.cpp is built
// with CPU_CAPABILITY = DEFAULT, AVX2, AVX512 and AVX512_BF16 on x86-64) and chosen at run time
// from what the CPU supports (the ATEN_CPU_CAPABILITY environment variable can lower it, as for
// ATen's own kernels). The jobs are plain data: the instruction-set copies, which use ATen's vector
// headers and are compiled without TORCH_TARGET_VERSION, see no tensor, and the stable-ABI code
// that plans and threads them (rotate_kernel.cpp, cache_kernel.cpp) shares nothing else with them.
#pragma once

#include <cstdint>

#include "kv_store_layout.h"
#include "yarn_ext/core/mrope.h"
#include "yarn_ext/core/strided_rows.h"

namespace yarn_ext::cpu {

// Some row dimensions of one operand, outermost first, with element strides.
struct RowDims {
  int ndim = 0;
  int64_t sizes[kMaxRowDims] = {};
  int64_t in[kMaxRowDims] = {};
  int64_t out[kMaxRowDims] = {};
  int64_t positions[kMaxRowDims] = {};  // token dimensions only; 0 for head dimensions
};

// One rotated tensor (q, k or x) split into tokens and heads: the position can change along the
// token dimensions and does not along the head dimensions, so one cos/sin row serves all the
// heads of a token. Every operand of a job has the same token sizes and positions strides.
struct JobOperand {
  const void* in = nullptr;
  void* out = nullptr;    // == in for in-place rotation
  int64_t in_stride = 1;  // element strides of the last dimension
  int64_t out_stride = 1;
  RowDims tokens;
  RowDims heads;
  int64_t num_heads = 1;
  bool heads_inner = true;  // the heads of a token are closer in memory than its neighbours
};

// The element types the CPU kernels rotate.
enum class ElementType { kFloat32, kFloat16, kBFloat16, kFloat64 };

struct RotateJob {
  ElementType dtype = ElementType::kFloat32;
  JobOperand operands[2];
  int num_operands = 1;
  int64_t num_tokens = 0;
  const void* positions = nullptr;  // nullptr: implicit, a token's position is its offset
  bool int32_positions = false;
  const float* cache = nullptr;
  int64_t cache_positions = 0;
  const double* frequencies = nullptr;
  int64_t half = 0;  // rotary pairs per head
  double mscale = 1.0;
  int64_t head_size = 0;
  bool interleaved = false;
  bool inverse = false;
  MropeLayout mrope{};  // MRoPE: a token's t, h and w positions at the component stride
};

// rotate_store_kv over tokens: q and k normalized (when weights are given) and rotated, q in
// place, k (and v) written to the paged caches at their tokens' slots, quantized for a float8
// cache. Validated before it reaches the kernels (csrc/kv_store_plan.h): every slot is -1
// (padding, nothing written) or a row of the caches, no two tokens share one.
struct KvStoreJob {
  // The tables, positions, dtype, head_size and style of the rotation (operands unused); token
  // t's positions at offset t * position_stride.
  RotateJob rotation;
  int64_t position_stride = 0;
  TokenHeads q, k, v;
  int64_t v_head_size = 0;
  bool write_k = false;  // the rotated (and normalized) k also back into k
  PagedCache k_cache, v_cache;
  int64_t block_size = 1;
  const void* slots = nullptr;
  bool int32_slots = false;
  int64_t slot_stride = 1;
  // RMSNorm over each head (weights [head_size] of the inputs' dtype, nullptr: no norm)
  const void* q_weight = nullptr;
  const void* k_weight = nullptr;
  float eps = 0;
  bool unit_offset = false;  // scale by (1 + weight) in float32 (Qwen3.5), not by weight
  // float8_e4m3fn caches: values divided by the scale, saturated to +-448
  bool fp8 = false;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
};

struct Kernels {
  const char* name;
  // Rotates tokens [begin, end) of every operand of the job.
  void (*rotate_tokens)(const RotateJob& job, int64_t begin, int64_t end);
  // Tokens [begin, end) of a rotate_store_kv call.
  void (*rotate_store_kv_tokens)(const KvStoreJob& job, int64_t begin, int64_t end);
  // Rows [begin, end) of the float32 cos/sin cache: cos in columns [0, half), sin in [half, 2
  // half).
  void (*fill_cache_rows)(const double* frequencies, int64_t half, double mscale, float* cache,
                          int64_t begin, int64_t end);
};

// The copy for this CPU (and ATEN_CPU_CAPABILITY).
const Kernels& kernels();

// Which copy `kernels()` returns for a CPU with these features and this ATEN_CPU_CAPABILITY
// value (nullptr: unset): "DEFAULT", "AVX2", "AVX512" or "AVX512_BF16", as ATen decides its own
// (ATen has no AVX512_BF16: its "avx512" lowers that copy to AVX512).
const char* choose_capability(bool avx2, bool avx512, bool avx512_bf16, const char* requested);

}  // namespace yarn_ext::cpu

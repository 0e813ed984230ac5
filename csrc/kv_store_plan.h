// Validation and layout of a rotate_store_kv call (QK-RMSNorm, rotation and the paged KV-cache
// write in one pass), shared by the kernels of every device: each rejects the same inputs with
// the same messages, and everything is checked before anything is written. A plan is plain data.
// yarn_ext/_validation.py mirrors these checks for the fake (tracing) implementation.
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "checks.h"
#include "kv_store_layout.h"
#include "rotation_plan.h"
#include "yarn_ext/core/cos_sin_run.h"

namespace yarn_ext::detail {

// The operator's arguments, as the schema lists them (csrc/schemas.cpp).
struct KvStoreArgs {
  const torch::stable::Tensor& q;
  const torch::stable::Tensor& k;
  const torch::stable::Tensor& v;
  const torch::stable::Tensor& cos_sin_cache;
  const torch::stable::Tensor& inv_freq;
  double mscale;
  const torch::stable::Tensor& positions;
  const torch::stable::Tensor& k_cache;
  const torch::stable::Tensor& v_cache;
  const torch::stable::Tensor& slot_mapping;
  const std::optional<torch::stable::Tensor>& q_norm_weight;
  const std::optional<torch::stable::Tensor>& k_norm_weight;
  double eps;
  bool norm_unit_offset;
  const std::optional<torch::stable::Tensor>& k_scale;
  const std::optional<torch::stable::Tensor>& v_scale;
  bool interleaved;
  bool write_k;
  MropeSection mrope;
};

struct KvStorePlan {
  CosSinTables tables;  // the rotation's (MRoPE layout included)
  Dtype dtype;          // of q, k and v
  int64_t num_tokens;
  int64_t head_size;  // of q and k
  int64_t v_head_size;
  const void* positions;
  bool int32_positions;
  int64_t position_stride;  // between tokens (the component stride is in tables.mrope)
  TokenHeads q, k, v;
  PagedCache k_cache, v_cache;
  int64_t num_blocks;
  int64_t block_size;
  const void* slots;
  bool int32_slots;
  int64_t slot_stride;
  const void* q_weight;  // nullptr: no norm
  const void* k_weight;
  float eps;
  bool unit_offset;
  bool fp8;  // float8_e4m3fn caches
  const float* k_scale;
  const float* v_scale;
  bool interleaved;
  bool write_k;
};

// Validates every argument's metadata and memory (reads no tensor data) and lays the call out.
KvStorePlan plan_rotate_store_kv(const char* op, const KvStoreArgs& args);

// The checks that read slot_mapping's values (host memory): every slot -1 or within the caches,
// no slot twice.
void check_slots(const char* op, const KvStorePlan& plan);

}  // namespace yarn_ext::detail

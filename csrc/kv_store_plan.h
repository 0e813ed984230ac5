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
  const std::optional<torch::stable::Tensor>& invalid_slots;
};

// The call's layout, the dtype of q, k and v that picks its kernel, and their device.
struct KvStorePlan : KvStoreLayout {
  Dtype dtype;
  int32_t device_index;
};

// Validates every argument's metadata and memory (reads no tensor data) and lays the call out.
KvStorePlan plan_rotate_store_kv(const char* op, const KvStoreArgs& args);

// The checks that read slot_mapping's values (host memory): every slot -1 or within the caches,
// no slot twice.
void check_slots(const char* op, const KvStorePlan& plan);

// A backend's implementation of the operator, in the schema's argument order (csrc/schemas.cpp):
// the call validated and laid out, then handed to `run` (which may still refuse it before
// writing: the CPU checks the slots' values).
template <typename R, R (*run)(const KvStorePlan&)>
R rotate_store_kv_entry(
    torch::stable::Tensor q, torch::stable::Tensor k, torch::stable::Tensor v,
    torch::stable::Tensor cos_sin_cache, torch::stable::Tensor inv_freq, double mscale,
    torch::stable::Tensor positions, torch::stable::Tensor k_cache, torch::stable::Tensor v_cache,
    torch::stable::Tensor slot_mapping, std::optional<torch::stable::Tensor> q_norm_weight,
    std::optional<torch::stable::Tensor> k_norm_weight, double eps, bool norm_unit_offset,
    std::optional<torch::stable::Tensor> k_scale, std::optional<torch::stable::Tensor> v_scale,
    bool interleaved, bool write_k, std::optional<std::vector<int64_t>> mrope_section,
    bool mrope_interleaved, std::optional<torch::stable::Tensor> invalid_slots) {
  return run(plan_rotate_store_kv("yarn_ext.rotate_store_kv", {q,
                                                               k,
                                                               v,
                                                               cos_sin_cache,
                                                               inv_freq,
                                                               mscale,
                                                               positions,
                                                               k_cache,
                                                               v_cache,
                                                               slot_mapping,
                                                               q_norm_weight,
                                                               k_norm_weight,
                                                               eps,
                                                               norm_unit_offset,
                                                               k_scale,
                                                               v_scale,
                                                               interleaved,
                                                               write_k,
                                                               {mrope_section, mrope_interleaved},
                                                               invalid_slots}));
}

// Elements the CUDA kernel moves per access: 16 bytes' worth (16 / sizeof q's element) where
// every row of q, k, v, the caches and the weights starts 16-byte aligned (a cache's fp8 rows
// to as many bytes as it has elements), the rotary half and the heads are whole vectors and the
// cos/sin cache's runs are aligned to their size; else 1.
int64_t kv_store_vector_width(const KvStorePlan& plan);

}  // namespace yarn_ext::detail

// CPU kernel of rotate_store_kv (QK-RMSNorm, rotation and the paged KV-cache write in one pass):
// this file validates and threads; the loop is vectorized/kv_store.h, in each instruction-set
// copy. Every check - slot_mapping's values too - runs before the first write, so a call that
// raises has changed nothing.
#include <torch/csrc/stable/library.h>

#include "cpu/cpu_kernels.h"
#include "cpu/job_helpers.h"
#include "kv_store_plan.h"

namespace yarn_ext::cpu {
namespace {

void run_cpu(const detail::KvStorePlan& plan) {
  // (invalid_slots stays as it is: a slot outside the caches raises here, before any write)
  detail::check_slots("yarn_ext.rotate_store_kv", plan);
  if (plan.num_tokens == 0) return;
  KvStoreJob job;
  RotateJob& r = job.rotation;
  r.dtype = element_type(plan.dtype);
  r.num_tokens = plan.num_tokens;
  r.positions = plan.positions;
  r.int32_positions = plan.int32_positions;
  r.cache = plan.tables.cache;
  r.cache_positions = plan.tables.cache_positions;
  r.frequencies = plan.tables.frequencies;
  r.half = plan.tables.half;
  r.mscale = plan.tables.mscale;
  r.head_size = plan.head_size;
  r.interleaved = plan.interleaved;
  r.mrope = plan.tables.mrope;
  job.position_stride = plan.position_stride;
  job.q = plan.q;
  job.k = plan.k;
  job.v = plan.v;
  job.v_head_size = plan.v_head_size;
  job.write_k = plan.write_k;
  job.k_cache = plan.k_cache;
  job.v_cache = plan.v_cache;
  job.block_size = plan.block_size;
  job.slots = plan.slots;
  job.int32_slots = plan.int32_slots;
  job.slot_stride = plan.slot_stride;
  job.q_weight = plan.q_weight;
  job.k_weight = plan.k_weight;
  job.eps = plan.eps;
  job.unit_offset = plan.unit_offset;
  job.fp8 = plan.fp8;
  job.k_scale = plan.k_scale;
  job.v_scale = plan.v_scale;
  const int64_t elements_per_token =
      (plan.q.num_heads + plan.k.num_heads) * plan.head_size + plan.v.num_heads * plan.v_head_size;
  const Kernels& kernel = kernels();
  for_token_chunks(plan.num_tokens, elements_per_token, [&](int64_t begin, int64_t end) {
    kernel.rotate_store_kv_tokens(job, begin, end);
  });
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(yarn_ext, CPU, m) {
  m.impl("rotate_store_kv", TORCH_BOX((&detail::rotate_store_kv_entry<void, &run_cpu>)));
}

}  // namespace yarn_ext::cpu

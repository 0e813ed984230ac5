// rotate_store_kv's operands as plain data, torch-free and host+device: what the plan
// (kv_store_plan.h) lays out and the kernels walk - the CPU loop (cpu/vectorized/kv_store.h) and
// the CUDA work (kv_store_work.h, whose kernel takes KvStoreLayout as its argument) - defined
// once for all of them.
#pragma once

#include <stdint.h>

#include "yarn_ext/core/cos_sin_run.h"

namespace yarn_ext {

// Largest head size (of k and of v) the kernels take: the CPU loop's per-head rows live on the
// stack. The plan refuses more, on every device (yarn_ext/_kv_store_validation.py mirrors it).
constexpr int64_t kKvMaxHeadSize = 1024;

// One operand: [tokens, heads, head_size] with unit element stride.
struct TokenHeads {
  void* data = nullptr;
  int64_t token_stride = 0;
  int64_t head_stride = 0;
  int64_t num_heads = 0;
};

// A paged cache [blocks, block_size, heads, head_size], contiguous in its last two dimensions:
// slot s is row s % block_size of block s / block_size.
struct PagedCache {
  void* data = nullptr;
  int64_t block_stride = 0;
  int64_t slot_stride = 0;  // along block_size
};

// A call laid out: everything the kernels read, as plain data (no tensors, no dtype: the kernel
// is chosen for it).
struct KvStoreLayout {
  CosSinTables tables;  // the rotation's (MRoPE layout included)
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
  // Counter of the tokens whose slot is outside [-1, num_blocks * block_size), which the CUDA
  // kernel skips (nullptr: none). The CPU kernel refuses them before any write.
  int32_t* invalid_slots;
};

}  // namespace yarn_ext

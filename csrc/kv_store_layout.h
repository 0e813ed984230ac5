// rotate_store_kv's operands as plain data, torch-free: what the plan (kv_store_plan.h) lays out
// and the kernels (cpu/vectorized/kv_store.h) walk, defined once for both.
#pragma once

#include <cstdint>

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

}  // namespace yarn_ext

#include "rotate_args.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

namespace yarn_ext::detail {
namespace {

bool vectorizable(const RotationTask& task, int64_t kVec, int64_t half) {
  const int64_t bytes = kVec * task.element_size();
  const int64_t pass = task.head_size - 2 * half;
  bool ok = task.in_stride == 1 && task.out_stride == 1 && half % kVec == 0 &&
            (task.in_place || pass % kVec == 0) &&
            reinterpret_cast<uintptr_t>(task.in) % bytes == 0 &&
            reinterpret_cast<uintptr_t>(task.out) % bytes == 0;
  for (int d = 0; ok && d < task.rows.ndim; ++d) {
    ok = task.rows.strides[kInput][d] % kVec == 0 && task.rows.strides[kOutput][d] % kVec == 0;
  }
  return ok;
}

// Threads of the token-major kernel that fill a multiprocessor once: its launch bounds
// guarantee 4 blocks of 256 resident (64 registers), and at 64 registers that is all of them
// on every architecture the build targets (65536 registers per multiprocessor).
constexpr int64_t kThreadsPerSm = int64_t{kTokenBlockThreads} * kTokenBlocksPerSm;
// gridDim.y, which counts head slices.
constexpr int64_t kMaxSlices = 65535;
// Token and head counters are 32-bit: tokens stay below 2^31 even in the padding threads of the
// last block; head slice ends stay below 2^31 with heads below 2^30.
constexpr int64_t kMaxTokens = std::numeric_limits<int32_t>::max() - kTokenBlockThreads;
constexpr int64_t kMaxHeads = int64_t{1} << 30;

std::atomic<bool>& token_path_setting() {
  static std::atomic<bool> enabled{[] {
    const char* value = std::getenv("YARN_EXT_CUDA_TOKEN_PATH");
    return value == nullptr || std::string(value) != "0";
  }()};
  return enabled;
}

}  // namespace

bool cuda_token_path_enabled() {
  return token_path_setting().load(std::memory_order_relaxed);
}

bool set_cuda_token_path(bool enabled) {
  return token_path_setting().exchange(enabled);
}

bool vector_path(const RotationTask& first, const RotationTask* second, const CosSinTables& tables,
                 int64_t kVec) {
  const auto cache_alignment = static_cast<uintptr_t>(kVec) * sizeof(float);
  return vectorizable(first, kVec, tables.half) &&
         (second == nullptr || vectorizable(*second, kVec, tables.half)) &&
         reinterpret_cast<uintptr_t>(tables.cache) % cache_alignment == 0;
}

bool token_layout(const RotationTask& task, TokenLayout* layout) {
  const RotationRows& rows = task.rows;
  // The head dimension: one along which the position does not change; of several (implicit
  // positions in [B, H, S, D]: B and H), the one nearest in memory. The others are token
  // dimensions, even one whose position does not change.
  int head = -1;
  for (int d = 0; d < rows.ndim; ++d) {
    if (rows.strides[kPositions][d] != 0) continue;
    if (head < 0 || std::abs(rows.strides[kInput][d]) < std::abs(rows.strides[kInput][head])) {
      head = d;
    }
  }
  // Token dimensions, outermost first; two that the head dimension separated merge where every
  // operand steps through the outer one contiguously ([B, H, S, D] views of [B, S, H, D]).
  int64_t sizes[kMaxRowDims];
  int64_t strides[kNumRotationOperands][kMaxRowDims];
  int count = 0;
  for (int d = 0; d < rows.ndim; ++d) {
    if (d == head) continue;
    bool merges = count > 0;
    for (int op = 0; merges && op < kNumRotationOperands; ++op) {
      merges = strides[op][count - 1] == rows.strides[op][d] * rows.sizes[d];
    }
    const int i = merges ? count - 1 : count++;
    sizes[i] = merges ? sizes[i] * rows.sizes[d] : rows.sizes[d];
    for (int op = 0; op < kNumRotationOperands; ++op) strides[op][i] = rows.strides[op][d];
  }
  if (count > 2) return false;
  // Right-aligned: the inner dimension is the last one; missing ones have size 1.
  for (int slot = 0; slot < 2; ++slot) {
    const int i = count - 2 + slot;
    const bool present = i >= 0;
    layout->tokens[slot] = present ? sizes[i] : 1;
    layout->in_token[slot] = present ? strides[kInput][i] : 0;
    layout->out_token[slot] = present ? strides[kOutput][i] : 0;
    layout->positions_token[slot] = present ? strides[kPositions][i] : 0;
  }
  layout->heads = head >= 0 ? rows.sizes[head] : 1;
  layout->in_head = head >= 0 ? rows.strides[kInput][head] : 0;
  layout->out_head = head >= 0 ? rows.strides[kOutput][head] : 0;
  return true;
}

bool same_tokens(const TokenLayout& a, const TokenLayout& b) {
  for (int d = 0; d < 2; ++d) {
    if (a.tokens[d] != b.tokens[d] || a.positions_token[d] != b.positions_token[d]) return false;
  }
  return true;
}

bool token_path_fits(const TokenLayout* const* layouts, int count, int64_t items_per_row) {
  int64_t heads = 0;
  for (int o = 0; o < count; ++o) {
    if (layouts[o]->tokens[0] * layouts[o]->tokens[1] > kMaxTokens) return false;
    heads += layouts[o]->heads;
  }
  return heads <= kMaxHeads && items_per_row <= kTokenBlockThreads;
}

int32_t heads_per_slice(int64_t num_tokens, int64_t items_per_row, int64_t total_heads,
                        int sm_count) {
  const int64_t threads_per_slice = std::max<int64_t>(1, num_tokens * items_per_row);
  const int64_t wanted = int64_t{std::max(sm_count, 1)} * kThreadsPerSm;
  const int64_t slices = std::min<int64_t>(std::max<int64_t>(1, total_heads),
                                           (wanted + threads_per_slice - 1) / threads_per_slice);
  int64_t per_slice = (total_heads + slices - 1) / slices;
  per_slice = std::max(per_slice, (total_heads + kMaxSlices - 1) / kMaxSlices);
  return static_cast<int32_t>(std::max<int64_t>(1, per_slice));
}

int32_t tokens_per_block(int64_t num_tokens, int64_t items_per_row) {
  return static_cast<int32_t>(
      std::max<int64_t>(1, std::min(kTokenBlockThreads / items_per_row, num_tokens)));
}

int64_t items_per_row(const RotationTask& task, int64_t half, int64_t kVec) {
  const int64_t pass = task.head_size - 2 * half;
  const bool copies = !task.in_place;
  return half / kVec + (copies ? (pass + kVec - 1) / kVec : 0);
}

}  // namespace yarn_ext::detail

// The cos/sin rows of a block of tokens, as the CPU rotation loops read them (kernels.cpp,
// kv_store.h): found in the cache, computed on the fly, or merged from three rows for MRoPE,
// once per token for all its heads. Part of the instruction-set copies (CPU_CAPABILITY).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/vectorized/cos_sin_rows.h"
#include "cpu/vectorized/rotate_row.h"

namespace yarn_ext::cpu {
namespace CPU_CAPABILITY {

// Tokens per block. Where a token's heads lie next to each other ([T, H, D], [B, S, H, D]),
// 16: their cos/sin rows (16 x 512 bytes at head_dim 128) stay in L1 while the heads are
// rotated, in memory order. Where the heads are far apart and the tokens of a head adjacent
// (contiguous [B, H, S, D]), each head is walked over a whole block of tokens: a block of 16
// would be 4 KB runs from 64 places at once, and the hardware prefetchers, which stop at each
// 4 KB page, would never get going; blocks of about kHeadRunBytes of each head (256 tokens at
// head_dim 128 in bf16) stream instead, while their cos/sin rows (128 KB) stay in L2.
constexpr int64_t kBlock = 16;
constexpr int64_t kMaxBlock = 256;

// Random positions make each token's cache row a cache miss: ask for all the rows of a block at
// once, so that their latencies overlap instead of stalling token by token.
inline void prefetch(const void* row, int64_t bytes) {
  const char* p = static_cast<const char*>(row);
  for (int64_t line = 0; line < bytes; line += 64) __builtin_prefetch(p + line);
}

// The same into L2 only (prefetcht1): for many short runs asked for well ahead, so that they do
// not hold the L1's few miss buffers, which the loads of the rows being rotated need.
inline void prefetch_to_l2(const void* row, int64_t bytes) {
  const char* p = static_cast<const char*>(row);
  for (int64_t line = 0; line < bytes; line += 64) __builtin_prefetch(p + line, 0, 2);
}

// The cos/sin rows (cos at [0, half), sin at [half, 2 half)) of a block of tokens.
template <typename acc_t>
class BlockTables {
 public:
  BlockTables(const RotateJob& job, int64_t block_tokens) : job_(job), block_tokens_(block_tokens) {
    if (job.mrope.enabled) {
      // Per pair, whether it takes the h (or w) component's value: all bits set, as blendv
      // wants. Made once per call; cos's half and sin's use the same masks.
      acc_t ones;
      std::memset(&ones, 0xFF, sizeof(ones));
      h_mask_.assign(job.half, acc_t(0));
      w_mask_.assign(job.half, acc_t(0));
      for (int64_t j = 0; j < job.half; ++j) {
        const int component = mrope_component(job.mrope, j);
        if (component == 1) h_mask_[j] = ones;
        if (component == 2) w_mask_[j] = ones;
      }
    }
  }

  // Row for token `slot` of the block, at `position`.
  const acc_t* row(int slot, int64_t position) {
    if (const acc_t* cached = cache_row(position)) return cached;
    // Computed rows: tokens of one block often share a position (a batch of one position).
    if (slot > 0 && positions_[slot - 1] == position && computed_[slot - 1]) {
      positions_[slot] = position;
      computed_[slot] = true;
      rows_[slot] = rows_[slot - 1];
      return rows_[slot];
    }
    acc_t* row = slot_row(slot);
    fill_cos_sin_row(position, job_.frequencies, job_.half, job_.mscale, row, row + job_.half);
    positions_[slot] = position;
    computed_[slot] = true;
    rows_[slot] = row;
    return row;
  }

  // Row for MRoPE token `slot` at positions (t, h, w): each pair's cos/sin from its component's
  // row, merged once here for every head of the token. Equal positions (a text token) take the
  // plain row as is.
  const acc_t* mrope_row(int slot, int64_t t, int64_t h, int64_t w) {
    if (t == h && t == w) return row(slot, t);
    const acc_t* sources[kMropeComponents];
    const int64_t positions[kMropeComponents] = {t, h, w};
    const int64_t width = 2 * job_.half;
    for (int c = 0; c < kMropeComponents; ++c) {
      sources[c] = cache_row(positions[c]);
      if (sources[c] == nullptr) {  // outside the cache (or float64): computed, into scratch
        if (component_rows_.empty()) component_rows_.resize(kMropeComponents * width);
        acc_t* computed = component_rows_.data() + c * width;
        fill_cos_sin_row(positions[c], job_.frequencies, job_.half, job_.mscale, computed,
                         computed + job_.half);
        sources[c] = computed;
      }
    }
    acc_t* merged = slot_row(slot);
    merge(sources, merged, 0);
    merge(sources, merged, job_.half);
    computed_[slot] = false;  // not a plain row: no later token may reuse it as one
    return merged;
  }

  // Asks for the cache rows an MRoPE token at (t, h, w) reads: one for a text token (equal
  // positions), three to merge from for an image token.
  void prefetch_sources(int64_t t, int64_t h, int64_t w) const {
    const int64_t positions[kMropeComponents] = {t, h, w};
    const int count = t == h && t == w ? 1 : kMropeComponents;
    for (int c = 0; c < count; ++c) {
      if (const acc_t* row = cache_row(positions[c])) prefetch(row, 2 * job_.half * sizeof(acc_t));
    }
  }

  void start_block() { std::fill(computed_, computed_ + block_tokens_, false); }

 private:
  // The cache row of `position`, or nullptr where the row must be computed.
  const acc_t* cache_row(int64_t position) const {
    if constexpr (std::is_same_v<acc_t, float>) {
      if (position >= 0 && position < job_.cache_positions) {
        return job_.cache + position * 2 * job_.half;
      }
    }
    return nullptr;
  }

  acc_t* slot_row(int slot) {
    if (scratch_.empty()) scratch_.resize(block_tokens_ * 2 * job_.half);  // only on a miss
    return scratch_.data() + slot * 2 * job_.half;
  }

  // Columns [offset, offset + half) of `merged`: pair j's value from sources[component(j)].
  void merge(const acc_t* const* sources, acc_t* merged, int64_t offset) const {
    using Vec = at::vec::Vectorized<acc_t>;
    const int64_t half = job_.half;
    int64_t j = 0;
    for (; j + Vec::size() <= half; j += Vec::size()) {
      const Vec th = Vec::blendv(Vec::loadu(sources[0] + offset + j),
                                 Vec::loadu(sources[1] + offset + j), Vec::loadu(&h_mask_[j]));
      Vec::blendv(th, Vec::loadu(sources[2] + offset + j), Vec::loadu(&w_mask_[j]))
          .store(merged + offset + j);
    }
    for (; j < half; ++j) {
      merged[offset + j] = sources[mrope_component(job_.mrope, j)][offset + j];
    }
  }

  const RotateJob& job_;
  int64_t block_tokens_;
  std::vector<acc_t> scratch_;
  std::vector<acc_t> component_rows_;
  std::vector<acc_t> h_mask_;
  std::vector<acc_t> w_mask_;
  int64_t positions_[kMaxBlock] = {};
  bool computed_[kMaxBlock] = {};
  const acc_t* rows_[kMaxBlock] = {};
};

// Stack room for paired cos/sin rows: only the bfloat16 loops use it.
template <typename scalar_t>
constexpr int64_t paired_rows_on_stack(int64_t floats) {
  return std::is_same_v<scalar_t, c10::BFloat16> ? floats : 1;
}

inline int64_t read_position(const RotateJob& job, int64_t offset) {
  if (job.positions == nullptr) return offset;
  if (job.int32_positions) return static_cast<const int32_t*>(job.positions)[offset];
  return static_cast<const int64_t*>(job.positions)[offset];
}

// A token's t, h and w positions, the first at `offset` (plain RoPE: t alone).
struct TokenPositions {
  int64_t t, h, w;
};

inline TokenPositions token_positions(const RotateJob& job, int64_t offset) {
  const int64_t t = read_position(job, offset);
  if (!job.mrope.enabled) return {t, t, t};
  const int64_t stride = job.mrope.component_stride;
  return {t, read_position(job, offset + stride), read_position(job, offset + 2 * stride)};
}

// A block's rows as rotate_row reads them; for the bfloat16 bit-operation loops of rotate_half
// pairs (`paired`) each distinct row is laid out paired once, here.
template <typename scalar_t>
class BlockRows {
 public:
  using acc_t = acc_type<scalar_t>;

  BlockRows(const RotateJob& job, int64_t block_tokens, bool paired)
      : job_(job), tables_(job, block_tokens), paired_(paired) {
    if (paired && block_tokens * 2 * job.half > kPairedOnStack) {
      paired_heap_.resize(block_tokens * 2 * job.half);
      paired_rows_ = paired_heap_.data();
    }
  }

  // The rows of the block's `count` tokens, at `positions`.
  void find(const TokenPositions* positions, int count) {
    tables_.start_block();
    for (int t = 0; t < count; ++t) {
      const TokenPositions& p = positions[t];
      if (job_.mrope.enabled) {
        rows_[t] = tables_.mrope_row(t, p.t, p.h, p.w);
      } else {
        rows_[t] = tables_.row(t, p.t);
        prefetch(rows_[t], 2 * job_.half * sizeof(acc_t));
      }
    }
    if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
      for (int t = 0; paired_ && t < count; ++t) {
        if (t > 0 && rows_[t] == sources_[t - 1]) {  // the same row as the previous token's
          sources_[t] = rows_[t];
          rows_[t] = rows_[t - 1];
          continue;
        }
        sources_[t] = rows_[t];
        make_paired_row(rows_[t], paired_rows_ + t * 2 * job_.half, job_.half);
        rows_[t] = paired_rows_ + t * 2 * job_.half;
      }
    }
  }

  // Asks for the cache rows a later token at `p` reads (MRoPE merges from them).
  void prefetch_sources(const TokenPositions& p) const { tables_.prefetch_sources(p.t, p.h, p.w); }

  const acc_t* const* rows() const { return rows_; }

 private:
  static constexpr int64_t kPairedOnStack = kBlock * 512;  // head_dim up to 512 without allocating

  const RotateJob& job_;
  BlockTables<acc_t> tables_;
  bool paired_;
  const acc_t* rows_[kMaxBlock] = {};
  const acc_t* sources_[kMaxBlock] = {};  // paired rows: the cache or computed row each came from
  float paired_stack_[paired_rows_on_stack<scalar_t>(kPairedOnStack)];
  std::vector<float> paired_heap_;
  float* paired_rows_ = paired_stack_;
};

}  // namespace CPU_CAPABILITY
}  // namespace yarn_ext::cpu

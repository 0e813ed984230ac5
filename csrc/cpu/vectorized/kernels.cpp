// The CPU kernels' inner loops for one instruction set: CMake compiles this file once per
// CPU_CAPABILITY (DEFAULT, and AVX2 and AVX512 on x86-64) and cpu_kernels.cpp picks the copy
// for the running CPU.
//
// Rotation walks a thread's tokens in blocks: the cos/sin rows of a block are found once (a
// cache row, or computed into a scratch row when the position is outside the cache or the input
// is float64), then every head of every operand (q and k) of the block is rotated with them, in
// memory order.
//
// Compiled without TORCH_TARGET_VERSION (ATen's vector headers refuse it) and seeing only raw
// pointers: everything it uses from ATen and c10 is inline, so it adds no libtorch symbol to the
// library (the CI's symbol check would catch one).
#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

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
namespace {

// Tokens per block. Where a token's heads lie next to each other ([T, H, D], [B, S, H, D]),
// 16: their cos/sin rows (16 x 512 bytes at head_dim 128) stay in L1 while the heads are
// rotated, in memory order. Where the heads are far apart and the tokens of a head adjacent
// (contiguous [B, H, S, D]), each head is walked over a whole block of tokens: a block of 16
// would be 4 KB runs from 64 places at once, and the hardware prefetchers, which stop at each
// 4 KB page, would never get going; blocks of about kHeadRunBytes of each head (256 tokens at
// head_dim 128 in bf16) stream instead, while their cos/sin rows (128 KB) stay in L2.
constexpr int64_t kBlock = 16;
constexpr int64_t kMaxBlock = 256;
constexpr int64_t kHeadRunBytes = 64 * 1024;
constexpr int64_t kPrefetchBytes = 4096;

// Walks the multi-index of some row dimensions one step at a time (an odometer), keeping the
// element offsets of input, output and positions; the start is found by division, once.
class DimsCursor {
 public:
  DimsCursor(const RowDims& dims, int64_t start) : dims_(dims) {
    for (int d = dims.ndim - 1; d >= 0; --d) {
      index_[d] = start % dims.sizes[d];
      start /= dims.sizes[d];
      in_ += index_[d] * dims.in[d];
      out_ += index_[d] * dims.out[d];
      positions_ += index_[d] * dims.positions[d];
    }
  }

  void next() {
    for (int d = dims_.ndim - 1; d >= 0; --d) {
      in_ += dims_.in[d];
      out_ += dims_.out[d];
      positions_ += dims_.positions[d];
      if (++index_[d] < dims_.sizes[d]) return;
      in_ -= index_[d] * dims_.in[d];
      out_ -= index_[d] * dims_.out[d];
      positions_ -= index_[d] * dims_.positions[d];
      index_[d] = 0;
    }
  }

  int64_t in() const { return in_; }
  int64_t out() const { return out_; }
  int64_t positions() const { return positions_; }

 private:
  const RowDims& dims_;
  int64_t index_[kMaxRowDims] = {};
  int64_t in_ = 0;
  int64_t out_ = 0;
  int64_t positions_ = 0;
};

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

template <typename scalar_t>
int64_t tokens_per_block(const RotateJob& job) {
  for (int o = 0; o < job.num_operands; ++o) {
    if (!job.operands[o].heads_inner) {
      const int64_t row_bytes = job.head_size * static_cast<int64_t>(sizeof(scalar_t));
      return std::clamp(kHeadRunBytes / std::max<int64_t>(1, row_bytes), kBlock, kMaxBlock);
    }
  }
  return kBlock;
}

int64_t read_position(const RotateJob& job, int64_t offset) {
  if (job.positions == nullptr) return offset;
  if (job.int32_positions) return static_cast<const int32_t*>(job.positions)[offset];
  return static_cast<const int64_t*>(job.positions)[offset];
}

// A token's t, h and w positions, the first at `offset` (plain RoPE: t alone).
struct TokenPositions {
  int64_t t, h, w;
};

TokenPositions token_positions(const RotateJob& job, int64_t offset) {
  const int64_t t = read_position(job, offset);
  if (!job.mrope.enabled) return {t, t, t};
  const int64_t stride = job.mrope.component_stride;
  return {t, read_position(job, offset + stride), read_position(job, offset + 2 * stride)};
}

template <typename scalar_t, bool interleaved, bool inverse>
void rotate_tokens_typed(const RotateJob& job, int64_t begin, int64_t end) {
  using acc_t = acc_type<scalar_t>;
  const int64_t block_tokens = tokens_per_block<scalar_t>(job);
  BlockTables<acc_t> tables(job, block_tokens);
  const acc_t* rows[kMaxBlock];
  TokenPositions block_positions[kMaxBlock];  // MRoPE only
  const acc_t* sources[kMaxBlock];  // paired rows: the cache or computed row each was made from
  // bfloat16 through the bit-operation loops when every operand has unit element stride; for
  // rotate_half pairs each token's cos/sin row is laid out for them once (paired), here.
  bool unit_strides = true;
  for (int o = 0; o < job.num_operands; ++o) {
    unit_strides =
        unit_strides && job.operands[o].in_stride == 1 && job.operands[o].out_stride == 1;
  }
  const bool bit_bf16 = unit_strides && bit_bf16_path<scalar_t>(interleaved, job.half);
  const bool paired = bit_bf16 && !interleaved;
  constexpr int64_t kPairedOnStack = kBlock * 512;  // head_dim up to 512 without allocating
  float paired_stack[paired_rows_on_stack<scalar_t>(kPairedOnStack)];
  std::vector<float> paired_heap;
  float* paired_rows = paired_stack;
  if (paired && block_tokens * 2 * job.half > kPairedOnStack) {
    paired_heap.resize(block_tokens * 2 * job.half);
    paired_rows = paired_heap.data();
  }
  int64_t in_offsets[2][kMaxBlock];
  int64_t out_offsets[2][kMaxBlock];
  // The token dimensions of all operands have the same sizes, and positions strides (those of
  // operand 0 serve all).
  DimsCursor cursors[2] = {DimsCursor(job.operands[0].tokens, begin),
                           DimsCursor(job.operands[job.num_operands - 1].tokens, begin)};
  // MRoPE merges a token's row from up to three cache rows before its heads are rotated: their
  // loads are asked for a block ahead, while the block before rotates, so that they have
  // arrived when the merge reads them.
  DimsCursor ahead(job.operands[0].tokens, begin);
  int64_t ahead_token = begin;
  auto prefetch_sources_until = [&](int64_t stop) {
    for (; ahead_token < std::min(stop, end); ++ahead_token, ahead.next()) {
      const TokenPositions p = token_positions(job, ahead.positions());
      tables.prefetch_sources(p.t, p.h, p.w);
    }
  };
  for (int64_t block = begin; block < end; block += block_tokens) {
    const int count = static_cast<int>(std::min(block_tokens, end - block));
    tables.start_block();
    if (job.mrope.enabled) prefetch_sources_until(block + 2 * block_tokens);
    for (int t = 0; t < count; ++t) {
      const TokenPositions p = token_positions(job, cursors[0].positions());
      if (job.mrope.enabled) {
        block_positions[t] = p;  // merged below, once the block's offsets are known
      } else {
        rows[t] = tables.row(t, p.t);
        prefetch(rows[t], 2 * job.half * sizeof(acc_t));
      }
      for (int o = 0; o < job.num_operands; ++o) {
        in_offsets[o][t] = cursors[o].in();
        out_offsets[o][t] = cursors[o].out();
        cursors[o].next();
      }
    }
    for (int t = 0; job.mrope.enabled && t < count; ++t) {
      const TokenPositions& p = block_positions[t];
      rows[t] = tables.mrope_row(t, p.t, p.h, p.w);
    }
    if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
      for (int t = 0; paired && t < count; ++t) {
        if (t > 0 && rows[t] == sources[t - 1]) {  // the same row as the previous token's
          sources[t] = rows[t];
          rows[t] = rows[t - 1];
          continue;
        }
        sources[t] = rows[t];
        make_paired_row(rows[t], paired_rows + t * 2 * job.half, job.half);
        rows[t] = paired_rows + t * 2 * job.half;
      }
    }
    for (int o = 0; o < job.num_operands; ++o) {
      const JobOperand& op = job.operands[o];
      const RowGeometry geometry{job.half,      job.head_size,   op.in_stride,
                                 op.out_stride, op.in != op.out, bit_bf16};
      const auto* in = static_cast<const scalar_t*>(op.in);
      auto* out = static_cast<scalar_t*>(op.out);
      auto rotate = [&](int t, const DimsCursor& head) {
        rotate_row<scalar_t, interleaved, inverse>(in + in_offsets[o][t] + head.in(),
                                                   out + out_offsets[o][t] + head.out(), rows[t],
                                                   geometry);
      };
      if (op.heads_inner) {
        // Partial rotary (Qwen3.5 rotates 64 of 256 features): each head's rotated features are
        // a short run with a gap after it, which the hardware prefetchers do not follow, and
        // every row's first load waited on memory. The next token's runs are asked for, into L2,
        // while this token's heads rotate (asked for into L1, they stalled the rotation: in
        // bfloat16 Qwen3.5's shape went from 75-87% of the copy to 87-99% with the L2 hint,
        // AVX2 and AVX512 copies alike).
        const bool ask_ahead = job.head_size > 2 * job.half;
        const int64_t run_bytes = 2 * job.half * static_cast<int64_t>(sizeof(scalar_t));
        const bool more_blocks = block + count < end;
        for (int t = 0; t < count; ++t) {
          if (ask_ahead && (t + 1 < count || more_blocks)) {
            // (past the block's last token, the next one is where the cursor stopped)
            const int64_t next = t + 1 < count ? in_offsets[o][t + 1] : cursors[o].in();
            DimsCursor ahead_head(op.heads, 0);
            for (int64_t h = 0; h < op.num_heads; ++h, ahead_head.next()) {
              prefetch_to_l2(in + next + ahead_head.in(), run_bytes);
            }
          }
          DimsCursor head(op.heads, 0);
          for (int64_t h = 0; h < op.num_heads; ++h, head.next()) rotate(t, head);
        }
      } else {
        // Each head's rows of the block, in memory order, asking for the rows kPrefetchBytes
        // ahead (the next head's first ones at the end of a head's run): the hardware
        // prefetchers restart at every 4 KB page and would leave each run's loads waiting.
        const int64_t row_bytes = job.head_size * static_cast<int64_t>(sizeof(scalar_t));
        const int ahead = static_cast<int>(std::max<int64_t>(1, kPrefetchBytes / row_bytes));
        DimsCursor head(op.heads, 0);
        for (int64_t h = 0; h < op.num_heads; ++h, head.next()) {
          DimsCursor next_head = head;
          next_head.next();
          const bool last_head = h + 1 == op.num_heads;
          for (int t = 0; t < count; ++t) {
            if (t + ahead < count) {
              prefetch(in + in_offsets[o][t + ahead] + head.in(), row_bytes);
            } else if (!last_head && t + ahead - count < count) {
              prefetch(in + in_offsets[o][t + ahead - count] + next_head.in(), row_bytes);
            }
            rotate(t, head);
          }
        }
      }
    }
  }
}

template <typename scalar_t>
void rotate_tokens_dtype(const RotateJob& job, int64_t begin, int64_t end) {
  if (job.interleaved) {
    if (job.inverse) return rotate_tokens_typed<scalar_t, true, true>(job, begin, end);
    return rotate_tokens_typed<scalar_t, true, false>(job, begin, end);
  }
  if (job.inverse) return rotate_tokens_typed<scalar_t, false, true>(job, begin, end);
  return rotate_tokens_typed<scalar_t, false, false>(job, begin, end);
}

void rotate_tokens(const RotateJob& job, int64_t begin, int64_t end) {
  switch (job.dtype) {
    case ElementType::kFloat32:
      return rotate_tokens_dtype<float>(job, begin, end);
    case ElementType::kBFloat16:
      return rotate_tokens_dtype<c10::BFloat16>(job, begin, end);
    case ElementType::kFloat16:
      return rotate_tokens_dtype<c10::Half>(job, begin, end);
    case ElementType::kFloat64:
      return rotate_tokens_dtype<double>(job, begin, end);
  }
}

void fill_cache_rows(const double* frequencies, int64_t half, double mscale, float* cache,
                     int64_t begin, int64_t end) {
  for (int64_t p = begin; p < end; ++p) {
    float* row = cache + p * 2 * half;
    fill_cos_sin_row(p, frequencies, half, mscale, row, row + half);
  }
}

}  // namespace

#define YARN_STRINGIFY_IMPL(x) #x
#define YARN_STRINGIFY(x) YARN_STRINGIFY_IMPL(x)
extern const Kernels kernels{YARN_STRINGIFY(CPU_CAPABILITY), &rotate_tokens, &fill_cache_rows};

}  // namespace CPU_CAPABILITY
}  // namespace yarn_ext::cpu

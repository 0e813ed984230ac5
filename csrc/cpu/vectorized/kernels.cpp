// The CPU kernels' inner loops for one instruction set: CMake compiles this file once per
// CPU_CAPABILITY (DEFAULT, and AVX2, AVX512 and AVX512_BF16 on x86-64) and cpu_kernels.cpp picks
// the copy for the running CPU.
//
// Rotation walks a thread's tokens in blocks: the cos/sin rows of a block are found once (a
// cache row, or computed into a scratch row when the position is outside the cache or the input
// is float64), then every head of every operand (q and k) of the block is rotated with them, in
// memory order.
//
// Compiled without TORCH_TARGET_VERSION (ATen's vector headers refuse it) and seeing only raw
// pointers: everything it uses from ATen and c10 is inline, so it adds no libtorch symbol to the
// library (the CI's symbol check would catch one).
//
// AVX512_BF16 is the AVX512 copy compiled with -mavx512bf16 as well: ATen's vectors and every
// AVX512 path here are its own, and its conversion loop (bf16_convert.h) is added on top.
#if defined(CPU_CAPABILITY_AVX512_BF16) && !defined(CPU_CAPABILITY_AVX512)
#define CPU_CAPABILITY_AVX512
#endif

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/vectorized/block_tables.h"
#include "cpu/vectorized/cos_sin_rows.h"
#include "cpu/vectorized/kv_store.h"
#include "cpu/vectorized/rotate_row.h"

namespace yarn_ext::cpu {
namespace CPU_CAPABILITY {
namespace {

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

template <typename scalar_t, bool interleaved, bool inverse>
void rotate_tokens_typed(const RotateJob& job, int64_t begin, int64_t end) {
  using acc_t = acc_type<scalar_t>;
  const int64_t block_tokens = tokens_per_block<scalar_t>(job);
  TokenPositions block_positions[kMaxBlock];
  // bfloat16 through the bit-operation loops when every operand has unit element stride; for
  // rotate_half pairs each token's cos/sin row is laid out for them once (paired).
  bool unit_strides = true;
  for (int o = 0; o < job.num_operands; ++o) {
    unit_strides =
        unit_strides && job.operands[o].in_stride == 1 && job.operands[o].out_stride == 1;
  }
  const bool bit_bf16 = unit_strides && bit_bf16_path<scalar_t>(interleaved, job.half);
  BlockRows<scalar_t> block_rows(job, block_tokens, bit_bf16 && !interleaved);
  const acc_t* const* rows = block_rows.rows();
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
      block_rows.prefetch_sources(token_positions(job, ahead.positions()));
    }
  };
  for (int64_t block = begin; block < end; block += block_tokens) {
    const int count = static_cast<int>(std::min(block_tokens, end - block));
    if (job.mrope.enabled) prefetch_sources_until(block + 2 * block_tokens);
    for (int t = 0; t < count; ++t) {
      block_positions[t] = token_positions(job, cursors[0].positions());
      for (int o = 0; o < job.num_operands; ++o) {
        in_offsets[o][t] = cursors[o].in();
        out_offsets[o][t] = cursors[o].out();
        cursors[o].next();
      }
    }
    block_rows.find(block_positions, count);
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

void rotate_store_kv_tokens(const KvStoreJob& job, int64_t begin, int64_t end) {
  switch (job.rotation.dtype) {
    case ElementType::kFloat32:
      return rotate_store_kv_dtype<float>(job, begin, end);
    case ElementType::kBFloat16:
      return rotate_store_kv_dtype<c10::BFloat16>(job, begin, end);
    case ElementType::kFloat16:
      return rotate_store_kv_dtype<c10::Half>(job, begin, end);
    case ElementType::kFloat64:  // refused by the plan (csrc/kv_store_plan.cpp)
      return;
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
extern const Kernels kernels{YARN_STRINGIFY(CPU_CAPABILITY), &rotate_tokens,
                             &rotate_store_kv_tokens, &fill_cache_rows};

}  // namespace CPU_CAPABILITY
}  // namespace yarn_ext::cpu

// The fast path of the CUDA rotation, as plain data and the work of one thread: layouts whose
// rows group into tokens (the rows that share a position) and heads - [T, H, D], [B, S, H, D],
// [B, H, S, D], slices of a fused qkv tensor - with 16-byte vectors. Torch-free and host+device:
// the CUDA kernel calls rotate_token_thread for its thread, and the CPU test hook
// (yarn_ext._C._emulate_cuda_rotate) calls it for every thread of the same launch geometry, so
// the CPU tests run the GPU's index arithmetic.
//
// Work is token-major (as vLLM's one block per token and FlashInfer's token x head tiles): a
// thread owns one item - kVec consecutive pairs, 16 bytes of each run - of one token, for a slice
// of that token's heads (q's, then k's). It reads the token's position and the item's cos/sin
// once, then rotates the item in every head of the slice, its pointers stepping by the head
// stride: no division per item, and 64-bit pointers formed once per thread by multiply-add.
#pragma once

#include <stdint.h>

#include "yarn_ext/core/cos_sin_run.h"
#include "yarn_ext/core/macros.h"
#include "yarn_ext/core/rotation.h"

namespace yarn_ext {

// The token-major kernel's launch bounds: at most 256 threads per block, and at least 4 blocks
// (1024 threads) resident per multiprocessor, which caps it at 64 registers.
constexpr int kTokenBlockThreads = 256;
constexpr int kTokenBlocksPerSm = 4;

// One rotated tensor (q, k or x) as tokens x heads. Token t lies at (t / inner_tokens,
// t % inner_tokens) in an outer and an inner token dimension (either may have size 1); its
// heads are one dimension.
template <typename scalar_t>
struct TokenOperand {
  const scalar_t* in;
  scalar_t* out;                // == in, in place
  int64_t in_token_strides[2];  // element strides of the outer and inner token dimension
  int64_t out_token_strides[2];
  int64_t in_head_stride;  // element stride between heads
  int64_t out_head_stride;
  int32_t num_heads;
};

template <typename scalar_t>
struct TokenRotateArgs {
  TokenOperand<scalar_t> operands[2];  // q and k (or x alone), with the same tokens
  int num_operands;
  CosSinTables tables;
  const void* positions;  // int32 or int64; nullptr: implicit, the position is the offset below
  bool int32_positions;
  int64_t position_strides[2];  // of the outer and inner token dimension
  int32_t num_tokens;
  int32_t inner_tokens;      // size of the inner token dimension, >= 1
  int32_t rotate_items;      // items [0, rotate_items) of a head rotate kVec pairs each,
  int32_t items_per_row;     // the rest copy kVec pass-through features (out of place only)
  int32_t heads_per_slice;   // heads one thread walks: q's heads then k's, in slices
  int32_t tokens_per_block;  // the block is items_per_row x tokens_per_block threads
};

// The launch: blocks of (items_per_row, tokens_per_block) threads, a grid of (token blocks,
// head slices).
struct TokenLaunch {
  uint32_t grid_x;
  uint32_t grid_y;
  uint32_t block_x;
  uint32_t block_y;
};

template <typename scalar_t>
YARN_HOST_DEVICE inline int32_t total_heads(const TokenRotateArgs<scalar_t>& args) {
  int32_t heads = 0;
  for (int o = 0; o < args.num_operands; ++o) heads += args.operands[o].num_heads;
  return heads;
}

template <typename scalar_t>
YARN_HOST_DEVICE inline TokenLaunch token_launch(const TokenRotateArgs<scalar_t>& args) {
  // In 64 bits: the planner allows up to 2^30 heads (a slice of 2^30 plus 2^30 would overflow
  // 32 bits) and up to 2^31 - 1 - kTokenBlockThreads tokens.
  const int64_t slices =
      (int64_t{total_heads(args)} + args.heads_per_slice - 1) / args.heads_per_slice;
  const int64_t blocks =
      (int64_t{args.num_tokens} + args.tokens_per_block - 1) / args.tokens_per_block;
  return {static_cast<uint32_t>(blocks), static_cast<uint32_t>(slices),
          static_cast<uint32_t>(args.items_per_row), static_cast<uint32_t>(args.tokens_per_block)};
}

// Calls f(operand, begin, end) for the heads [begin, end) of each operand in head slice `slice`
// (heads numbered over q's, then k's).
template <typename scalar_t, typename F>
YARN_HOST_DEVICE inline void for_each_slice_part(const TokenRotateArgs<scalar_t>& args,
                                                 uint32_t slice, F&& f) {
  const int32_t begin = static_cast<int32_t>(slice) * args.heads_per_slice;
  const int32_t end = begin + args.heads_per_slice;
  int32_t base = 0;
  YARN_UNROLL
  for (int o = 0; o < 2; ++o) {
    if (o >= args.num_operands) break;
    const TokenOperand<scalar_t>& op = args.operands[o];
    const int32_t lo = begin > base ? begin - base : 0;
    const int32_t hi = end - base < op.num_heads ? end - base : op.num_heads;
    if (lo < hi) f(op, lo, hi);
    base += op.num_heads;
  }
}

// The input and output rows of head `head` at token (outer, inner).
template <typename scalar_t>
YARN_HOST_DEVICE inline const scalar_t* token_input(const TokenOperand<scalar_t>& op, int32_t outer,
                                                    int32_t inner, int32_t head) {
  return op.in + outer * op.in_token_strides[0] + inner * op.in_token_strides[1] +
         head * op.in_head_stride;
}
template <typename scalar_t>
YARN_HOST_DEVICE inline scalar_t* token_output(const TokenOperand<scalar_t>& op, int32_t outer,
                                               int32_t inner, int32_t head) {
  return op.out + outer * op.out_token_strides[0] + inner * op.out_token_strides[1] +
         head * op.out_head_stride;
}

// The work of thread (thread_x, thread_y) of block (block_x, block_y) in token_launch(args):
// item thread_x of token block_x * tokens_per_block + thread_y, in the heads of slice block_y.
template <typename scalar_t, int kVec, bool interleaved, bool in_place>
YARN_HOST_DEVICE inline void rotate_token_thread(const TokenRotateArgs<scalar_t>& args,
                                                 uint32_t block_x, uint32_t block_y,
                                                 uint32_t thread_x, uint32_t thread_y) {
  using acc_t = rotate_acc_t<scalar_t>;
  // 32-bit: the planner takes this path only for fewer than 2^31 - 256 tokens (so that the
  // last block's threads stay below 2^31 too) and 2^30 heads.
  const uint32_t thread_token = block_x * static_cast<uint32_t>(args.tokens_per_block) + thread_y;
  if (thread_token >= static_cast<uint32_t>(args.num_tokens)) return;
  const int32_t token = static_cast<int32_t>(thread_token);
  const int32_t item = static_cast<int32_t>(thread_x);
  // Unsigned: a shorter division than the signed one. Once per thread, not per item.
  const int32_t outer =
      static_cast<int32_t>(static_cast<uint32_t>(token) / static_cast<uint32_t>(args.inner_tokens));
  const int32_t inner = token - outer * args.inner_tokens;
  const int64_t half = args.tables.half;
  if (item < args.rotate_items) {
    const int64_t first = int64_t{item} * kVec;
    const int64_t offset = outer * args.position_strides[0] + inner * args.position_strides[1];
    const CosSinRun<acc_t, kVec> cs =
        load_cos_sin<acc_t, kVec>(args.tables, args.positions, args.int32_positions, offset, first);
    for_each_slice_part(
        args, block_y, [&](const TokenOperand<scalar_t>& op, int32_t begin, int32_t end) {
          const scalar_t* in = token_input(op, outer, inner, begin);
          scalar_t* out = in_place ? nullptr : token_output(op, outer, inner, begin);
          // The pointers step to the next head only when there is one: none is ever formed
          // past the last head (undefined behaviour in the CPU emulation, where this runs too).
          YARN_NO_UNROLL
          for (int32_t h = begin; h < end; ++h) {
            const auto runs = rotation::load_pairs<scalar_t, kVec, interleaved>(in, 1, first, half);
            scalar_t* dst = in_place ? const_cast<scalar_t*>(in) : out;
            rotation::store_rotated<acc_t>(runs, dst, 1, first, half, cs.cos, cs.sin);
            const bool next = h + 1 < end;
            in += next ? op.in_head_stride : 0;
            if (!in_place) out += next ? op.out_head_stride : 0;
          }
        });
  } else if (!in_place) {  // a pass-through item: copied
    const int64_t first = 2 * half + int64_t{item - args.rotate_items} * kVec;
    for_each_slice_part(args, block_y,
                        [&](const TokenOperand<scalar_t>& op, int32_t begin, int32_t end) {
                          const scalar_t* in = token_input(op, outer, inner, begin);
                          scalar_t* out = token_output(op, outer, inner, begin);
                          YARN_NO_UNROLL
                          for (int32_t h = begin; h < end; ++h) {
                            rotation::copy_features<scalar_t, kVec>(in, out, 1, 1, first);
                            const bool next = h + 1 < end;
                            in += next ? op.in_head_stride : 0;
                            out += next ? op.out_head_stride : 0;
                          }
                        });
  }
}

}  // namespace yarn_ext

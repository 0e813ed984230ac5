// Host side of the CUDA rotation's work (core/token_work.h, core/rotate_work.h): turns validated
// RotationTasks into the plain launch arguments a kernel (or the CPU emulation of one) walks.
// Shared by the CUDA launcher and the CPU test hook, so both choose the path, the vector width,
// the head slices and the launch geometry the same way.
#pragma once

#include <algorithm>
#include <type_traits>

#include "rotation_plan.h"
#include "yarn_ext/core/rotate_work.h"
#include "yarn_ext/core/token_work.h"

namespace yarn_ext::detail {

// Whether a launch over `first` (and `second`) can move kVec elements per access: for each task
// unit element stride, every row start a multiple of kVec elements from a base aligned to kVec
// elements, and whole vectors per row; and a cos/sin cache whose kVec-float runs are aligned to
// their size (half % kVec == 0 aligns the rows; the base is checked, since a cache may be a view).
bool vector_path(const RotationTask& first, const RotationTask* second, const CosSinTables& tables,
                 int64_t kVec);

// A task's rows as tokens x heads (core/token_work.h): one head dimension (position stride 0)
// and at most two token dimensions, after merging.
struct TokenLayout {
  int64_t tokens[2];  // outer and inner token dimension (size 1 where there is none)
  int64_t in_token[2];
  int64_t out_token[2];
  int64_t positions_token[2];
  int64_t heads;  // 1 where there is no head dimension
  int64_t in_head;
  int64_t out_head;
};

// Whether the CUDA launcher may take the token-major path (default: yes). Off, every layout
// takes the generic one: for measuring that path (benchmarks/rotation.py) and for telling a
// suspected fast-path problem apart. Set from Python with yarn_ext._C._set_cuda_token_path, or
// at load time with YARN_EXT_CUDA_TOKEN_PATH=0. The setter returns the previous setting.
bool cuda_token_path_enabled();
bool set_cuda_token_path(bool enabled);

// The token layout of a task, or false where its rows do not group so.
bool token_layout(const RotationTask& task, TokenLayout* layout);

// Whether two tasks' tokens are the same tokens (same sizes, same positions), so that one launch
// can rotate both with one cos/sin read per token.
bool same_tokens(const TokenLayout& a, const TokenLayout& b);

// Whether the token-major kernel takes these layouts (sizes within its 32-bit counters and
// block shape).
bool token_path_fits(const TokenLayout* const* layouts, int count, int64_t items_per_row);

// Heads per thread for a token launch: all of them where the tokens alone fill the GPU
// (`sm_count` multiprocessors), fewer where they do not, so that small calls still spread.
int32_t heads_per_slice(int64_t num_tokens, int64_t items_per_row, int64_t total_heads,
                        int sm_count);

// Tokens per block of a token launch: a block of (items_per_row, tokens) threads, at most
// kTokenBlockThreads, and no more tokens than there are.
int32_t tokens_per_block(int64_t num_tokens, int64_t items_per_row);

// Items per row: rotated ones (kVec pairs each), then, out of place, the pass-through features
// past the rotary dim, kVec at a time.
int64_t items_per_row(const RotationTask& task, int64_t half, int64_t kVec);

template <typename scalar_t>
RotateOperand<scalar_t> rotate_operand(const RotationTask& task) {
  return {static_cast<const scalar_t*>(task.in),
          static_cast<scalar_t*>(task.out),
          task.positions,
          task.rows,
          task.num_rows,
          task.in_stride,
          task.out_stride};
}

// One generic launch over `first` and optionally `second` (q and k share positions and tables).
template <typename scalar_t>
RotateArgs<scalar_t> rotate_args(const RotationTask& first, const RotationTask* second,
                                 const CosSinTables& tables, int64_t kVec) {
  RotateArgs<scalar_t> args{};
  args.operands[0] = rotate_operand<scalar_t>(first);
  args.num_operands = 1;
  if (second != nullptr) {
    args.operands[1] = rotate_operand<scalar_t>(*second);
    args.num_operands = 2;
  }
  args.int32_positions = first.int32_positions;
  args.tables = tables;
  args.rotate_items = tables.half / kVec;
  args.items_per_row = items_per_row(first, tables.half, kVec);
  return args;
}

template <typename scalar_t>
TokenOperand<scalar_t> token_operand(const RotationTask& task, const TokenLayout& layout) {
  TokenOperand<scalar_t> op{};
  op.in = static_cast<const scalar_t*>(task.in);
  op.out = static_cast<scalar_t*>(task.out);
  for (int d = 0; d < 2; ++d) {
    op.in_token_strides[d] = layout.in_token[d];
    op.out_token_strides[d] = layout.out_token[d];
  }
  op.in_head_stride = layout.in_head;
  op.out_head_stride = layout.out_head;
  op.num_heads = static_cast<int32_t>(layout.heads);
  return op;
}

// The sizes of a token launch: its counters, its head slices and its block shape.
template <typename scalar_t>
void set_token_sizes(TokenRotateArgs<scalar_t>& args, int64_t tokens, int64_t inner_tokens,
                     int64_t items, int64_t total_heads, int sm_count) {
  args.num_tokens = static_cast<int32_t>(tokens);
  args.inner_tokens = static_cast<int32_t>(inner_tokens);
  args.items_per_row = static_cast<int32_t>(items);
  args.heads_per_slice = heads_per_slice(tokens, items, total_heads, sm_count);
  args.tokens_per_block = tokens_per_block(tokens, items);
}

// One token-major launch over `tasks` (one, or q and k with the same tokens).
template <typename scalar_t>
TokenRotateArgs<scalar_t> token_rotate_args(const RotationTask* const* tasks,
                                            const TokenLayout* const* layouts, int count,
                                            const CosSinTables& tables, int64_t kVec,
                                            int sm_count) {
  TokenRotateArgs<scalar_t> args{};
  int64_t heads = 0;
  for (int o = 0; o < count; ++o) {
    args.operands[o] = token_operand<scalar_t>(*tasks[o], *layouts[o]);
    heads += layouts[o]->heads;
  }
  args.num_operands = count;
  args.tables = tables;
  const RotationTask& first = *tasks[0];
  const TokenLayout& layout = *layouts[0];
  args.positions = first.positions;
  args.int32_positions = first.int32_positions;
  args.position_strides[0] = layout.positions_token[0];
  args.position_strides[1] = layout.positions_token[1];
  args.rotate_items = static_cast<int32_t>(tables.half / kVec);
  set_token_sizes(args, layout.tokens[0] * layout.tokens[1], layout.tokens[1],
                  items_per_row(first, tables.half, kVec), heads, sm_count);
  return args;
}

// Builds the launch arguments for the fastest path the tasks allow and calls
// run(std::integral_constant<int, kVec>{}, args) for each launch, args being TokenRotateArgs
// (token-major, kVec = 16 / sizeof(scalar_t)) or RotateArgs (generic, kVec of 16 bytes or 1).
// q and k go in one launch, except on the token path when their tokens differ; empty tensors
// get none. `sm_count` sizes the token path's head slices; `token_path` false keeps every layout
// on the generic path.
template <typename scalar_t, typename Run>
void with_rotate_args(const RotationTask& first, const RotationTask* second,
                      const CosSinTables& rotation_tables, bool inverse, int sm_count,
                      bool token_path, Run&& run) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  const RotationTask* tasks[2];
  int count = 0;
  for (const RotationTask* task : {&first, second}) {
    if (task != nullptr && task->num_rows > 0 && task->head_size > 0) tasks[count++] = task;
  }
  if (count == 0) return;
  const RotationTask* other = count == 2 ? tasks[1] : nullptr;
  CosSinTables tables = rotation_tables;
  tables.inverse = inverse;
  if (!vector_path(*tasks[0], other, rotation_tables, kVec)) {
    run(std::integral_constant<int, 1>{}, rotate_args<scalar_t>(*tasks[0], other, tables, 1));
    return;
  }
  TokenLayout layouts[2];
  const TokenLayout* layout_of[2] = {&layouts[0], &layouts[1]};
  bool tokens = true;
  for (int o = 0; o < count; ++o) tokens = tokens && token_layout(*tasks[o], &layouts[o]);
  if (!token_path || !tokens ||
      !token_path_fits(layout_of, count, items_per_row(*tasks[0], tables.half, kVec))) {
    run(std::integral_constant<int, kVec>{}, rotate_args<scalar_t>(*tasks[0], other, tables, kVec));
    return;
  }
  if (count == 1 || same_tokens(layouts[0], layouts[1])) {
    run(std::integral_constant<int, kVec>{},
        token_rotate_args<scalar_t>(tasks, layout_of, count, tables, kVec, sm_count));
    return;
  }
  for (int o = 0; o < count; ++o) {
    run(std::integral_constant<int, kVec>{},
        token_rotate_args<scalar_t>(&tasks[o], &layout_of[o], 1, tables, kVec, sm_count));
  }
}

}  // namespace yarn_ext::detail

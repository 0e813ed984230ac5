// The generic path of the CUDA rotation, for any layout: one launch as plain data, and the work
// of one flat index in it. Torch-free and host+device: the CUDA kernel is a grid-stride loop over
// rotate_work_item, and the CPU test hook (yarn_ext._C._emulate_cuda_rotate) runs the same
// function serially, so the CPU tests exercise the GPU's index arithmetic, its vector path
// included. Layouts that group into tokens and heads take the faster token-major path instead
// (core/token_work.h).
#pragma once

#include <stdint.h>

#include "yarn_ext/core/cos_sin_run.h"
#include "yarn_ext/core/macros.h"
#include "yarn_ext/core/rotation.h"
#include "yarn_ext/core/strided_rows.h"

namespace yarn_ext {

// Operand slots of a rotation's row layout.
enum RotationOperand { kInput = 0, kOutput = 1, kPositions = 2, kNumRotationOperands = 3 };

using RotationRows = StridedRows<kNumRotationOperands>;

template <typename scalar_t>
struct RotateOperand {
  const scalar_t* in;
  scalar_t* out;
  const void* positions;  // int32 or int64 per RotateArgs; nullptr: implicit positions
  RotationRows rows;
  int64_t num_rows;
  int64_t in_stride;  // element strides of the last dimension
  int64_t out_stride;
};

template <typename scalar_t>
struct RotateArgs {
  RotateOperand<scalar_t> operands[2];  // q and k (or x alone)
  int num_operands;
  bool int32_positions;
  CosSinTables tables;
  int64_t rotate_items;   // items [0, rotate_items) of a row rotate kVec pairs each
  int64_t items_per_row;  // the rest copy kVec pass-through features (out of place only)

  YARN_HOST_DEVICE int64_t total_items() const {
    int64_t total = 0;
    for (int i = 0; i < num_operands; ++i) total += operands[i].num_rows * items_per_row;
    return total;
  }
};

// The work of flat index `index` in [0, total_items()): operand, row and item are decoded from
// it, the row is located through the strided layout, and the item rotates kVec pairs (or copies
// kVec pass-through features).
template <typename scalar_t, int kVec, bool interleaved>
YARN_HOST_DEVICE inline void rotate_work_item(const RotateArgs<scalar_t>& args, int64_t index) {
  using acc_t = rotate_acc_t<scalar_t>;
  const int64_t first_total = args.operands[0].num_rows * args.items_per_row;
  const bool second = index >= first_total;
  const RotateOperand<scalar_t>& op = args.operands[second ? 1 : 0];
  const int64_t local = second ? index - first_total : index;
  const int64_t row = local / args.items_per_row;
  const int64_t item = local - row * args.items_per_row;
  int64_t offsets[kNumRotationOperands];
  op.rows.offsets(row, offsets);
  const scalar_t* in = op.in + offsets[kInput];
  scalar_t* out = op.out + offsets[kOutput];
  if (item < args.rotate_items) {
    const int64_t first = item * kVec;
    const int64_t half = args.tables.half;
    const CosSinRun<acc_t, kVec> cs = load_cos_sin<acc_t, kVec>(
        args.tables, op.positions, args.int32_positions, offsets[kPositions], first);
    // x after cos/sin: loaded before, it would be live across the out-of-line float64 call and
    // spill at the register budget.
    const auto runs =
        rotation::load_pairs<scalar_t, kVec, interleaved>(in, op.in_stride, first, half);
    rotation::store_rotated<acc_t>(runs, out, op.out_stride, first, half, cs.cos, cs.sin);
  } else {
    const int64_t first = 2 * args.tables.half + (item - args.rotate_items) * kVec;
    rotation::copy_features<scalar_t, kVec>(in, out, op.in_stride, op.out_stride, first);
  }
}

}  // namespace yarn_ext

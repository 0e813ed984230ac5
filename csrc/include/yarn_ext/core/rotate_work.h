// One rotation launch as plain data, and the work of one thread index in it. Torch-free and
// host+device: the CUDA kernel is a grid-stride loop over rotate_work_item, and the CPU test hook
// (yarn_ext._C._emulate_cuda_rotate) runs the same function serially, so the CPU tests exercise
// the GPU's index arithmetic, its vector path included.
#pragma once

#include <stdint.h>

#include <type_traits>

#include "yarn_ext/core/macros.h"
#include "yarn_ext/core/rotation.h"
#include "yarn_ext/core/strided_rows.h"
#include "yarn_ext/core/yarn_math.h"

namespace yarn_ext {

// Operand slots of a rotation's row layout.
enum RotationOperand { kInput = 0, kOutput = 1, kPositions = 2, kNumRotationOperands = 3 };

using RotationRows = StridedRows<kNumRotationOperands>;

// float32 arithmetic for float32/float16/bfloat16, float64 for float64.
template <typename scalar_t>
using rotate_acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

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
  const float* cache;
  int64_t cache_positions;
  const double* frequencies;
  double mscale;
  bool inverse;  // rotate by -angle (sin negated): the transpose, used by the backward
  int64_t half;
  int64_t rotate_items;   // items [0, rotate_items) of a row rotate kVec pairs each
  int64_t items_per_row;  // the rest copy kVec pass-through features (out of place only)

  YARN_HOST_DEVICE int64_t total_items() const {
    int64_t total = 0;
    for (int i = 0; i < num_operands; ++i) total += operands[i].num_rows * items_per_row;
    return total;
  }
};

// cos/sin of pairs [first, first + kVec) at `position`: from the float32 cache when the position
// is inside it (and the arithmetic is float32), else from the float64 math.
template <typename acc_t, int kVec, typename scalar_t>
YARN_HOST_DEVICE inline void load_cos_sin(const RotateArgs<scalar_t>& args, int64_t position,
                                          int64_t first, acc_t (&cos)[kVec], acc_t (&sin)[kVec]) {
  if constexpr (std::is_same_v<acc_t, float>) {
    if (position >= 0 && position < args.cache_positions) {
      const float* row = args.cache + position * 2 * args.half + first;
      rotation::load<kVec>(row, cos);
      rotation::load<kVec>(row + args.half, sin);
      return;
    }
  }
  for (int j = 0; j < kVec; ++j) {
    double c, s;
    math::scaled_cos_sin(position, args.frequencies[first + j], args.mscale, &c, &s);
    cos[j] = static_cast<acc_t>(c);
    sin[j] = static_cast<acc_t>(s);
  }
}

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
    // Load x before the position: its DRAM reads then overlap the position -> cos/sin chain.
    const auto runs =
        rotation::load_pairs<scalar_t, kVec, interleaved>(in, op.in_stride, first, args.half);
    const int64_t p = offsets[kPositions];
    int64_t position = p;  // implicit: the index along dim -2
    if (op.positions != nullptr) {
      position = args.int32_positions ? static_cast<const int32_t*>(op.positions)[p]
                                      : static_cast<const int64_t*>(op.positions)[p];
    }
    acc_t cos[kVec], sin[kVec];
    load_cos_sin<acc_t, kVec>(args, position, first, cos, sin);
    if (args.inverse) {  // -angle: exact, so the inverse is the forward's transpose to the bit
      YARN_UNROLL
      for (int j = 0; j < kVec; ++j) sin[j] = -sin[j];
    }
    rotation::store_rotated<acc_t>(runs, out, op.out_stride, first, args.half, cos, sin);
  } else {
    const int64_t first = 2 * args.half + (item - args.rotate_items) * kVec;
    rotation::copy_features<scalar_t, kVec>(in, out, op.in_stride, op.out_stride, first);
  }
}

}  // namespace yarn_ext

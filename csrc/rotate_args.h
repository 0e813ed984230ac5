// Host side of the work-item rotation (core/rotate_work.h): turns validated RotationTasks into
// the plain RotateArgs a launch (or the CPU emulation of one) walks. Shared by the CUDA kernel
// and the CPU test hook, so both decide the vector path and the item counts the same way.
#pragma once

#include <ATen/core/Tensor.h>

#include <type_traits>

#include "rotation_plan.h"
#include "yarn_ext/core/rotate_work.h"

namespace yarn_ext::detail {

// Whether a launch over `first` (and `second`) can move kVec elements per access: for each task
// unit element stride, every row start a multiple of kVec elements from a base aligned to kVec
// elements, and whole vectors per row; and a cos/sin cache whose kVec-float runs are aligned to
// their size (half % kVec == 0 aligns the rows; the base is checked, since a cache may be a view).
bool vector_path(const RotationTask& first, const RotationTask* second, const at::Tensor& cache,
                 int64_t kVec, int64_t half);

template <typename scalar_t>
RotateOperand<scalar_t> rotate_operand(const RotationTask& task) {
  return {task.input.const_data_ptr<scalar_t>(),
          task.output.mutable_data_ptr<scalar_t>(),
          task.positions.defined() ? task.positions.const_data_ptr() : nullptr,
          task.rows,
          num_rows(task.input),
          task.input.stride(-1),
          task.output.stride(-1)};
}

// One launch over `first` and optionally `second` (q and k share positions and tables).
template <typename scalar_t>
RotateArgs<scalar_t> rotate_args(const RotationTask& first, const RotationTask* second,
                                 const at::Tensor& cache, const at::Tensor& inv_freq, double mscale,
                                 bool inverse, int64_t kVec) {
  RotateArgs<scalar_t> args{};
  args.operands[0] = rotate_operand<scalar_t>(first);
  args.num_operands = 1;
  if (second != nullptr) {
    args.operands[1] = rotate_operand<scalar_t>(*second);
    args.num_operands = 2;
  }
  args.int32_positions = first.positions.defined() && first.positions.scalar_type() == at::kInt;
  args.cache = cache.const_data_ptr<float>();
  args.cache_positions = cache.size(0);
  args.frequencies = inv_freq.const_data_ptr<double>();
  args.mscale = mscale;
  args.inverse = inverse;
  args.half = inv_freq.size(0);
  args.rotate_items = args.half / kVec;
  // Out of place, the pass-through features past the rotary dim are copied too.
  const int64_t pass = first.input.size(-1) - 2 * args.half;
  const bool copies = !first.input.is_same(first.output);
  args.items_per_row = args.rotate_items + (copies ? (pass + kVec - 1) / kVec : 0);
  return args;
}

// Builds the launch arguments at the widest width the launch can take - 16-byte vectors
// (kVec = 16 / sizeof(scalar_t)) where vector_path allows, else one element - and calls
// run(std::integral_constant<int, width>{}, args). Returns whether the vector width was taken.
template <typename scalar_t, typename Run>
bool with_rotate_args(const RotationTask& first, const RotationTask* second,
                      const at::Tensor& cache, const at::Tensor& inv_freq, double mscale,
                      bool inverse, Run&& run) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  if (vector_path(first, second, cache, kVec, inv_freq.size(0))) {
    run(std::integral_constant<int, kVec>{},
        rotate_args<scalar_t>(first, second, cache, inv_freq, mscale, inverse, kVec));
    return true;
  }
  run(std::integral_constant<int, 1>{},
      rotate_args<scalar_t>(first, second, cache, inv_freq, mscale, inverse, 1));
  return false;
}

}  // namespace yarn_ext::detail

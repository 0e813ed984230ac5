// CPU kernels: rotation out of place (rotate) and in place on q and optional k (rotate_inplace).
//
// Work is split over rows (head vectors) with at::parallel_for. Every row finds its position,
// takes cos/sin from the float32 cache when the position is inside it, and otherwise computes
// them with the shared float64 math into a per-thread scratch row (memoised on the position, so
// the heads of one token share one computation). float64 inputs always take the scratch path,
// so float64 calls are float64 end to end.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <optional>
#include <type_traits>
#include <vector>

#include "rotation_plan.h"
#include "yarn_ext/core/rotation.h"
#include "yarn_ext/core/yarn_math.h"

namespace yarn_ext::cpu {
namespace {

// Supplies the cos/sin rows (cos at [0, half), sin at [half, 2 * half)) for a position.
template <typename acc_t>
class CosSinRows {
 public:
  CosSinRows(const at::Tensor& cache, const at::Tensor& inv_freq, double mscale)
      : cache_(cache.const_data_ptr<float>()),
        cache_positions_(cache.size(0)),
        frequencies_(inv_freq.const_data_ptr<double>()),
        half_(inv_freq.size(0)),
        mscale_(mscale) {}

  const acc_t* row(int64_t position) {
    if constexpr (std::is_same_v<acc_t, float>) {
      if (position >= 0 && position < cache_positions_) return cache_ + position * 2 * half_;
    }
    if (scratch_.empty() || position != scratch_position_) {
      scratch_.resize(2 * half_);
      math::fill_cos_sin_row(position, frequencies_, half_, mscale_, scratch_.data(),
                             scratch_.data() + half_);
      scratch_position_ = position;
    }
    return scratch_.data();
  }

 private:
  const float* cache_;
  int64_t cache_positions_;
  const double* frequencies_;
  int64_t half_;
  double mscale_;
  std::vector<acc_t> scratch_;  // allocated only when a position misses the cache
  int64_t scratch_position_ = 0;
};

struct RowShape {
  int64_t head_size;
  int64_t half;
  int64_t in_stride;  // element strides of the last dimension
  int64_t out_stride;
  bool interleaved;
  bool inverse;  // rotate by -angle: sin negated
};

// One row with the shared kVec = 1 work unit: the same code the CUDA scalar path runs.
template <typename scalar_t, typename acc_t, bool interleaved>
void rotate_row(const scalar_t* in, scalar_t* out, const RowShape& shape, const acc_t* cos_sin) {
  for (int64_t i = 0; i < shape.half; ++i) {
    const acc_t sin = shape.inverse ? -cos_sin[shape.half + i] : cos_sin[shape.half + i];
    rotation::rotate_pairs<scalar_t, acc_t, 1, interleaved>(
        in, out, shape.in_stride, shape.out_stride, i, shape.half, cos_sin + i, &sin);
  }
  if (in != out) {  // partial rotary: the features past the rotary dim pass through
    for (int64_t d = 2 * shape.half; d < shape.head_size; ++d) {
      rotation::copy_features<scalar_t, 1>(in, out, shape.in_stride, shape.out_stride, d);
    }
  }
}

template <typename scalar_t, typename position_t>
void rotate_rows(const at::Tensor& input, const at::Tensor& output, const at::Tensor& positions,
                 const RotationRows& rows, const at::Tensor& cache, const at::Tensor& inv_freq,
                 double mscale, bool interleaved, bool inverse) {
  using acc_t = at::opmath_type<scalar_t>;
  const RowShape shape{input.size(-1),    inv_freq.size(0), input.stride(-1),
                       output.stride(-1), interleaved,      inverse};
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* out = output.mutable_data_ptr<scalar_t>();
  const position_t* pos = positions.defined() ? positions.const_data_ptr<position_t>() : nullptr;
  // About 32K elements per task (ATen's grain), so small calls stay on the calling thread.
  const int64_t grain = std::max<int64_t>(1, 32768 / shape.head_size);

  at::parallel_for(0, detail::num_rows(input), grain, [&](int64_t begin, int64_t end) {
    CosSinRows<acc_t> tables(cache, inv_freq, mscale);
    int64_t offsets[kNumRotationOperands];
    for (int64_t r = begin; r < end; ++r) {
      rows.offsets(r, offsets);
      const int64_t position =
          pos != nullptr ? static_cast<int64_t>(pos[offsets[kPositions]]) : offsets[kPositions];
      const acc_t* cos_sin = tables.row(position);
      const scalar_t* row_in = in + offsets[kInput];
      scalar_t* row_out = out + offsets[kOutput];
      if (shape.interleaved) {
        rotate_row<scalar_t, acc_t, true>(row_in, row_out, shape, cos_sin);
      } else {
        rotate_row<scalar_t, acc_t, false>(row_in, row_out, shape, cos_sin);
      }
    }
  });
}

void run(const detail::RotationTask& task, const at::Tensor& cache, const at::Tensor& inv_freq,
         double mscale, bool interleaved, bool inverse) {
  if (task.input.numel() == 0) return;
  const bool int32_positions = task.positions.defined() && task.positions.scalar_type() == at::kInt;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, task.input.scalar_type(), "yarn_ext_rotate", [&] {
        if (int32_positions) {
          rotate_rows<scalar_t, int32_t>(task.input, task.output, task.positions, task.rows, cache,
                                         inv_freq, mscale, interleaved, inverse);
        } else {
          rotate_rows<scalar_t, int64_t>(task.input, task.output, task.positions, task.rows, cache,
                                         inv_freq, mscale, interleaved, inverse);
        }
      });
}

at::Tensor rotate_cpu(const at::Tensor& x, const at::Tensor& cos_sin_cache,
                      const at::Tensor& inv_freq, double mscale,
                      const std::optional<at::Tensor>& positions, bool interleaved, bool inverse) {
  const detail::RotationTask task =
      detail::plan_rotate("yarn_ext.rotate", x, cos_sin_cache, inv_freq, mscale, positions);
  run(task, cos_sin_cache, inv_freq, mscale, interleaved, inverse);
  return task.output;
}

void rotate_inplace_cpu(const at::Tensor& q, const std::optional<at::Tensor>& k,
                        const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq, double mscale,
                        const std::optional<at::Tensor>& positions, bool interleaved) {
  // Everything is validated before the first write, so a failing call leaves q and k untouched.
  const detail::InplaceRotation plan = detail::plan_rotate_inplace(
      "yarn_ext.rotate_inplace", q, k, cos_sin_cache, inv_freq, mscale, positions);
  run(plan.q, cos_sin_cache, inv_freq, mscale, interleaved, /*inverse=*/false);
  if (plan.k) run(*plan.k, cos_sin_cache, inv_freq, mscale, interleaved, /*inverse=*/false);
}

}  // namespace

TORCH_LIBRARY_IMPL(yarn_ext, CPU, m) {
  m.impl("rotate", &rotate_cpu);
  m.impl("rotate_inplace", &rotate_inplace_cpu);
}

}  // namespace yarn_ext::cpu

// CUDA kernels: rotation out of place (rotate) and of q and optional k in place, in one launch
// (rotate_inplace).
//
// The unit of work is kVec consecutive pairs of one row (rotation::rotate_pairs, shared with the
// CPU kernels). A flat grid-stride loop walks (operand, row, item); rows map to element offsets
// through the shared StridedRows arithmetic, so any layout works: [T, H, D], [B, H, S, D],
// slices of a fused qkv tensor, broadcast positions. When every row is 16-byte aligned with unit
// element stride, items move 16 bytes per load/store (kVec = 8 for bf16/fp16, 4 for fp32);
// otherwise kVec = 1. cos/sin come from the float32 cache; consecutive threads of a token's heads
// read the same cache row, which stays in L1/L2, so DRAM sees it about once per token. Positions
// outside the cache, and every position of float64 inputs, get cos/sin from the shared float64
// math on the fly. No host synchronization: positions are only read on the device.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <type_traits>

#include "cuda/launch.h"
#include "rotation_plan.h"
#include "yarn_ext/core/rotation.h"
#include "yarn_ext/core/yarn_math.h"

namespace yarn_ext::cuda {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
struct Operand {
  const scalar_t* in;
  scalar_t* out;
  const void* positions;  // int32 or int64 per RotateArgs; nullptr: implicit positions
  detail::RotationRows rows;
  int64_t num_rows;
  int64_t in_stride;  // element strides of the last dimension
  int64_t out_stride;
};

template <typename scalar_t>
struct RotateArgs {
  Operand<scalar_t> operands[2];
  int num_operands;
  bool int32_positions;
  const float* cache;
  int64_t cache_positions;
  const double* frequencies;
  double mscale;
  int64_t half;
  bool interleaved;
  int64_t rotate_items;   // items [0, rotate_items) rotate kVec pairs each
  int64_t items_per_row;  // the rest copy kVec pass-through features (out of place only)
};

template <typename acc_t, int kVec, typename Args>
__device__ __forceinline__ void load_cos_sin(const Args& args, int64_t position, int64_t first,
                                             acc_t (&cos)[kVec], acc_t (&sin)[kVec]) {
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

template <typename scalar_t, int kVec, bool interleaved>
__global__ void __launch_bounds__(kThreads)
    rotate_kernel(const __grid_constant__ RotateArgs<scalar_t> args) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t first_total = args.operands[0].num_rows * args.items_per_row;
  const int64_t total =
      first_total + (args.num_operands > 1 ? args.operands[1].num_rows * args.items_per_row : 0);
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < total;
       index += step) {
    const bool second = index >= first_total;
    const Operand<scalar_t>& op = args.operands[second ? 1 : 0];
    const int64_t local = second ? index - first_total : index;
    const int64_t row = local / args.items_per_row;
    const int64_t item = local - row * args.items_per_row;
    int64_t offsets[detail::kNumRotationOperands];
    op.rows.offsets(row, offsets);
    const scalar_t* in = op.in + offsets[detail::kInput];
    scalar_t* out = op.out + offsets[detail::kOutput];
    if (item < args.rotate_items) {
      const int64_t p = offsets[detail::kPositions];
      const int64_t position =
          op.positions == nullptr ? p
          : args.int32_positions
              ? static_cast<int64_t>(static_cast<const int32_t*>(op.positions)[p])
              : static_cast<const int64_t*>(op.positions)[p];
      const int64_t first = item * kVec;
      acc_t cos[kVec], sin[kVec];
      load_cos_sin<acc_t, kVec>(args, position, first, cos, sin);
      rotation::rotate_pairs<scalar_t, acc_t, kVec, interleaved>(
          in, out, op.in_stride, op.out_stride, first, args.half, cos, sin);
    } else {
      const int64_t first = 2 * args.half + (item - args.rotate_items) * kVec;
      rotation::copy_features<scalar_t, kVec>(in, out, op.in_stride, op.out_stride, first);
    }
  }
}

// Whether a task can take 16-byte vectors of kVec elements: unit element stride, every row start
// a multiple of kVec elements from a 16-byte aligned base, and whole vectors per row.
bool vectorizable(const detail::RotationTask& task, int64_t kVec, int64_t half) {
  const int64_t bytes = kVec * static_cast<int64_t>(task.input.element_size());
  const int64_t pass = task.input.size(-1) - 2 * half;
  bool ok = task.input.stride(-1) == 1 && task.output.stride(-1) == 1 && half % kVec == 0 &&
            (task.input.is_same(task.output) || pass % kVec == 0) &&
            reinterpret_cast<uintptr_t>(task.input.const_data_ptr()) % bytes == 0 &&
            reinterpret_cast<uintptr_t>(task.output.const_data_ptr()) % bytes == 0;
  for (int d = 0; ok && d < task.rows.ndim; ++d) {
    ok = task.rows.strides[detail::kInput][d] % kVec == 0 &&
         task.rows.strides[detail::kOutput][d] % kVec == 0;
  }
  return ok;
}

template <typename scalar_t>
Operand<scalar_t> make_operand(const detail::RotationTask& task) {
  return {task.input.const_data_ptr<scalar_t>(),
          task.output.mutable_data_ptr<scalar_t>(),
          task.positions.defined() ? task.positions.const_data_ptr() : nullptr,
          task.rows,
          detail::num_rows(task.input),
          task.input.stride(-1),
          task.output.stride(-1)};
}

template <typename scalar_t, int kVec>
void launch(RotateArgs<scalar_t> args, bool copy_pass_through, int64_t head_size) {
  args.rotate_items = args.half / kVec;
  args.items_per_row =
      args.rotate_items + (copy_pass_through ? (head_size - 2 * args.half + kVec - 1) / kVec : 0);
  int64_t total = 0;
  for (int i = 0; i < args.num_operands; ++i)
    total += args.operands[i].num_rows * args.items_per_row;
  if (total == 0) return;
  // Enough blocks to fill every SM several times over, then grid-stride: full occupancy from
  // one token to millions.
  const unsigned blocks = grid_size(total, kThreads, 32);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (args.interleaved) {
    rotate_kernel<scalar_t, kVec, true><<<blocks, kThreads, 0, stream>>>(args);
  } else {
    rotate_kernel<scalar_t, kVec, false><<<blocks, kThreads, 0, stream>>>(args);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Rotates one or two tasks (q and k) sharing the tables, in one launch.
void rotate_tasks(const detail::RotationTask& first, const detail::RotationTask* second,
                  const at::Tensor& cache, const at::Tensor& inv_freq, double mscale,
                  bool interleaved) {
  const c10::cuda::CUDAGuard guard(first.input.device());
  const int64_t half = inv_freq.size(0);
  const int64_t head_size = first.input.size(-1);
  const bool copy_pass_through = !first.input.is_same(first.output);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, first.input.scalar_type(), "yarn_ext_rotate_cuda", [&] {
        RotateArgs<scalar_t> args{};
        args.operands[0] = make_operand<scalar_t>(first);
        args.num_operands = 1;
        if (second != nullptr) {
          args.operands[1] = make_operand<scalar_t>(*second);
          args.num_operands = 2;
        }
        args.int32_positions =
            first.positions.defined() && first.positions.scalar_type() == at::kInt;
        args.cache = cache.const_data_ptr<float>();
        args.cache_positions = cache.size(0);
        args.frequencies = inv_freq.const_data_ptr<double>();
        args.mscale = mscale;
        args.half = half;
        args.interleaved = interleaved;
        constexpr int kVec = 16 / sizeof(scalar_t);
        const bool vector_path = vectorizable(first, kVec, half) &&
                                 (second == nullptr || vectorizable(*second, kVec, half));
        if (vector_path) {
          launch<scalar_t, kVec>(args, copy_pass_through, head_size);
        } else {
          launch<scalar_t, 1>(args, copy_pass_through, head_size);
        }
      });
}

at::Tensor rotate_cuda(const at::Tensor& x, const at::Tensor& cos_sin_cache,
                       const at::Tensor& inv_freq, double mscale,
                       const std::optional<at::Tensor>& positions, bool interleaved) {
  const c10::cuda::CUDAGuard guard(x.device());
  const detail::RotationTask task =
      detail::plan_rotate("yarn_ext.rotate", x, cos_sin_cache, inv_freq, mscale, positions);
  rotate_tasks(task, nullptr, cos_sin_cache, inv_freq, mscale, interleaved);
  return task.output;
}

void rotate_inplace_cuda(const at::Tensor& q, const std::optional<at::Tensor>& k,
                         const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq, double mscale,
                         const std::optional<at::Tensor>& positions, bool interleaved) {
  const c10::cuda::CUDAGuard guard(q.device());
  // Everything is validated before the launch, so a failing call leaves q and k untouched.
  const detail::InplaceRotation plan = detail::plan_rotate_inplace(
      "yarn_ext.rotate_inplace", q, k, cos_sin_cache, inv_freq, mscale, positions);
  rotate_tasks(plan.q, plan.k ? &*plan.k : nullptr, cos_sin_cache, inv_freq, mscale, interleaved);
}

}  // namespace

TORCH_LIBRARY_IMPL(yarn_ext, CUDA, m) {
  m.impl("rotate", &rotate_cuda);
  m.impl("rotate_inplace", &rotate_inplace_cuda);
}

}  // namespace yarn_ext::cuda

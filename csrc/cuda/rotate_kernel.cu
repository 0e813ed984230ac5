// CUDA kernels: rotation out of place (rotate) and of q and optional k in place, in one launch
// (rotate_inplace).
//
// The unit of work is kVec consecutive pairs of one row (core/rotate_work.h, shared with the CPU
// emulation the tests run). A flat grid-stride loop walks (operand, row, item); rows map to offsets
// through the shared StridedRows arithmetic, so any layout works: [T, H, D], [B, H, S, D],
// slices of a fused qkv tensor, broadcast positions. When every row is 16-byte aligned with unit
// element stride, items move 16 bytes per load/store (kVec = 8 for bf16/fp16, 4 for fp32);
// otherwise kVec = 1. cos/sin come from the float32 cache; consecutive threads of a token's heads
// read the same cache row, which stays in L1/L2, so DRAM sees it about once per token. Positions
// outside the cache, and every position of float64 inputs, get cos/sin from the shared float64
// math on the fly. No host synchronization: positions are only read on the device.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

#include "cuda/launch.h"
#include "rotate_args.h"
#include "rotation_plan.h"
#include "yarn_ext/core/rotate_work.h"

namespace yarn_ext::cuda {
namespace {

constexpr int kThreads = 256;
// At least 4 blocks (1024 threads) per SM: the register budget (64) that keeps a memory-bound
// kernel at half occupancy or better without spilling (checked with -Xptxas -v).
constexpr int kMinBlocksPerSm = 4;

template <typename scalar_t, int kVec, bool interleaved>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    rotate_kernel(const __grid_constant__ RotateArgs<scalar_t> args) {
  const int64_t total = args.total_items();
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < total;
       index += step) {
    rotate_work_item<scalar_t, kVec, interleaved>(args, index);
  }
}

template <typename scalar_t, int kVec>
void launch(const RotateArgs<scalar_t>& args, bool interleaved) {
  const int64_t total = args.total_items();
  if (total == 0) return;
  // Enough blocks to fill every SM several times over, then grid-stride: full occupancy from
  // one token to millions.
  const unsigned blocks = grid_size(total, kThreads, 32);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (interleaved) {
    rotate_kernel<scalar_t, kVec, true><<<blocks, kThreads, 0, stream>>>(args);
  } else {
    rotate_kernel<scalar_t, kVec, false><<<blocks, kThreads, 0, stream>>>(args);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Rotates one or two tasks (q and k) sharing the tables, in one launch.
void rotate_tasks(const detail::RotationTask& first, const detail::RotationTask* second,
                  const at::Tensor& cache, const at::Tensor& inv_freq, double mscale,
                  bool interleaved, bool inverse) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, first.input.scalar_type(), "yarn_ext_rotate_cuda", [&] {
        detail::with_rotate_args<scalar_t>(
            first, second, cache, inv_freq, mscale, inverse, [&](auto width, const auto& args) {
              launch<scalar_t, decltype(width)::value>(args, interleaved);
            });
      });
}

at::Tensor rotate_cuda(const at::Tensor& x, const at::Tensor& cos_sin_cache,
                       const at::Tensor& inv_freq, double mscale,
                       const std::optional<at::Tensor>& positions, bool interleaved, bool inverse) {
  // Validation first: a CPU tensor must get the argument error, not a guard's complaint.
  const detail::RotationTask task =
      detail::plan_rotate("yarn_ext.rotate", x, cos_sin_cache, inv_freq, mscale, positions);
  const c10::cuda::CUDAGuard guard(x.device());
  rotate_tasks(task, nullptr, cos_sin_cache, inv_freq, mscale, interleaved, inverse);
  return task.output;
}

void rotate_inplace_cuda(const at::Tensor& q, const std::optional<at::Tensor>& k,
                         const at::Tensor& cos_sin_cache, const at::Tensor& inv_freq, double mscale,
                         const std::optional<at::Tensor>& positions, bool interleaved) {
  // Everything is validated before the launch, so a failing call leaves q and k untouched.
  const detail::InplaceRotation plan = detail::plan_rotate_inplace(
      "yarn_ext.rotate_inplace", q, k, cos_sin_cache, inv_freq, mscale, positions);
  const c10::cuda::CUDAGuard guard(q.device());
  rotate_tasks(plan.q, plan.k ? &*plan.k : nullptr, cos_sin_cache, inv_freq, mscale, interleaved,
               /*inverse=*/false);
}

}  // namespace

TORCH_LIBRARY_IMPL(yarn_ext, CUDA, m) {
  m.impl("rotate", &rotate_cuda);
  m.impl("rotate_inplace", &rotate_inplace_cuda);
}

}  // namespace yarn_ext::cuda

// CUDA kernels: rotation out of place (rotate) and of q and optional k in place, in one launch
// (rotate_inplace). Two paths, chosen on the host (rotate_args.h) and shared with the CPU
// emulation the tests run:
//  - token-major (core/token_work.h), for the layouts production uses - [T, H, D], [B, S, H, D],
//    [B, H, S, D], slices of a fused qkv tensor - with 16-byte loads and stores: a thread reads
//    a token's position and its cos/sin for kVec pairs once, then rotates those pairs in each
//    head of a slice of q's and k's heads, stepping by the head stride;
//  - generic (core/rotate_work.h), for any other layout: a grid-stride loop over a flat index
//    of (operand, row, item), rows located through the shared StridedRows arithmetic, 16-byte
//    accesses where every row is aligned, else one element at a time.
// cos/sin come from the float32 cache; positions outside it, and every position of float64
// inputs, take the float64 math out of line (core/cos_sin_run.h). No host synchronization:
// positions are only read on the device. benchmarks/sass.py reports what these kernels compile
// to (registers, local memory, instructions per item).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

#include "cuda/launch.h"
#include "rotate_args.h"
#include "rotation_plan.h"
#include "yarn_ext/core/rotate_work.h"
#include "yarn_ext/core/token_work.h"

namespace yarn_ext::cuda {
namespace {

constexpr int kThreads = kTokenBlockThreads;
// At least 4 blocks (1024 threads) per SM: the register budget (64) that keeps a memory-bound
// kernel at half occupancy or better without spilling (checked by benchmarks/sass.py).
constexpr int kMinBlocksPerSm = kTokenBlocksPerSm;
// The generic loop keeps its flat index, bounds and row offsets live across the out-of-line
// float64 call; at 64 registers that spilled, at 80 (3 blocks per SM) nothing does.
constexpr int kGenericMinBlocksPerSm = 3;

template <typename scalar_t, int kVec, bool interleaved, bool in_place>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    rotate_tokens_kernel(const __grid_constant__ TokenRotateArgs<scalar_t> args) {
  rotate_token_thread<scalar_t, kVec, interleaved, in_place>(args, blockIdx.x, blockIdx.y,
                                                             threadIdx.x, threadIdx.y);
}

template <typename scalar_t, int kVec, bool interleaved>
__global__ void __launch_bounds__(kThreads, kGenericMinBlocksPerSm)
    rotate_generic_kernel(const __grid_constant__ RotateArgs<scalar_t> args) {
  const int64_t total = args.total_items();
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < total;
       index += step) {
    rotate_work_item<scalar_t, kVec, interleaved>(args, index);
  }
}

template <typename scalar_t, int kVec>
void launch(const TokenRotateArgs<scalar_t>& args, bool interleaved) {
  const TokenLaunch geometry = token_launch(args);
  if (geometry.grid_x == 0 || geometry.grid_y == 0) return;
  const dim3 grid(geometry.grid_x, geometry.grid_y);
  const dim3 block(geometry.block_x, geometry.block_y);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool in_place = args.operands[0].in == args.operands[0].out;
  if (interleaved) {
    if (in_place) {
      rotate_tokens_kernel<scalar_t, kVec, true, true><<<grid, block, 0, stream>>>(args);
    } else {
      rotate_tokens_kernel<scalar_t, kVec, true, false><<<grid, block, 0, stream>>>(args);
    }
  } else if (in_place) {
    rotate_tokens_kernel<scalar_t, kVec, false, true><<<grid, block, 0, stream>>>(args);
  } else {
    rotate_tokens_kernel<scalar_t, kVec, false, false><<<grid, block, 0, stream>>>(args);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
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
    rotate_generic_kernel<scalar_t, kVec, true><<<blocks, kThreads, 0, stream>>>(args);
  } else {
    rotate_generic_kernel<scalar_t, kVec, false><<<blocks, kThreads, 0, stream>>>(args);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Rotates one or two tasks (q and k) sharing the tables.
void rotate_tasks(const detail::RotationTask& first, const detail::RotationTask* second,
                  const at::Tensor& cache, const at::Tensor& inv_freq, double mscale,
                  bool interleaved, bool inverse) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, first.input.scalar_type(), "yarn_ext_rotate_cuda", [&] {
        detail::with_rotate_args<scalar_t>(
            first, second, cache, inv_freq, mscale, inverse, sm_count(),
            detail::cuda_token_path_enabled(), [&](auto width, const auto& args) {
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

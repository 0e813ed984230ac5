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
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <optional>
#include <utility>
#include <vector>

#include "cuda/launch.h"
#include "export.h"
#include "rotate_args.h"
#include "rotation_overloads.h"
#include "rotation_plan.h"
#include "yarn_ext/core/rotate_work.h"
#include "yarn_ext/core/token_work.h"

namespace yarn_ext::cuda {
namespace {

using torch::stable::Tensor;

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
  const cudaStream_t stream = current_stream();
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
  STD_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int kVec>
void launch(const RotateArgs<scalar_t>& args, bool interleaved) {
  const int64_t total = args.total_items();
  if (total == 0) return;
  // Enough blocks to fill every SM several times over, then grid-stride: full occupancy from
  // one token to millions.
  const unsigned blocks = grid_size(total, kThreads, 32);
  const cudaStream_t stream = current_stream();
  if (interleaved) {
    rotate_generic_kernel<scalar_t, kVec, true><<<blocks, kThreads, 0, stream>>>(args);
  } else {
    rotate_generic_kernel<scalar_t, kVec, false><<<blocks, kThreads, 0, stream>>>(args);
  }
  STD_CUDA_KERNEL_LAUNCH_CHECK();
}

// Rotates one or two tasks (q and k) sharing the tables.
template <typename scalar_t>
void rotate_typed(const detail::RotationTask& first, const detail::RotationTask* second,
                  const CosSinTables& tables, bool interleaved, bool inverse) {
  detail::with_rotate_args<scalar_t>(first, second, tables, inverse, sm_count(),
                                     detail::cuda_token_path_enabled(),
                                     [&](auto width, const auto& args) {
                                       launch<scalar_t, decltype(width)::value>(args, interleaved);
                                     });
}

void rotate_tasks(const detail::RotationTask& first, const detail::RotationTask* second,
                  const CosSinTables& tables, bool interleaved, bool inverse) {
  switch (first.dtype) {
    case detail::Dtype::kFloat16:
      return rotate_typed<c10::Half>(first, second, tables, interleaved, inverse);
    case detail::Dtype::kBFloat16:
      return rotate_typed<c10::BFloat16>(first, second, tables, interleaved, inverse);
    case detail::Dtype::kFloat64:
      return rotate_typed<double>(first, second, tables, interleaved, inverse);
    default:  // float32, the only other type the checks let through
      return rotate_typed<float>(first, second, tables, interleaved, inverse);
  }
}

Tensor rotate_cuda_any(Tensor x, Tensor cos_sin_cache, Tensor inv_freq, double mscale,
                       std::optional<Tensor> positions, bool interleaved, bool inverse,
                       std::optional<std::vector<int64_t>> mrope_section, bool mrope_interleaved) {
  // Validation first: a CPU tensor must get the argument error, not a guard's complaint.
  CosSinTables tables;
  const detail::RotationTask task =
      detail::plan_rotate("yarn_ext.rotate", x, cos_sin_cache, inv_freq, mscale, positions,
                          {mrope_section, mrope_interleaved}, &tables);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  rotate_tasks(task, nullptr, tables, interleaved, inverse);
  return task.output;
}

void rotate_inplace_cuda_any(Tensor q, std::optional<Tensor> k, Tensor cos_sin_cache,
                             Tensor inv_freq, double mscale, std::optional<Tensor> positions,
                             bool interleaved, std::optional<std::vector<int64_t>> mrope_section,
                             bool mrope_interleaved) {
  // Everything is validated before the launch, so a failing call leaves q and k untouched.
  CosSinTables tables;
  const detail::InplaceRotation plan =
      detail::plan_rotate_inplace("yarn_ext.rotate_inplace", q, k, cos_sin_cache, inv_freq, mscale,
                                  positions, {mrope_section, mrope_interleaved}, &tables);
  const torch::stable::accelerator::DeviceGuard guard(q.get_device_index());
  rotate_tasks(plan.q, plan.k ? &*plan.k : nullptr, tables, interleaved, /*inverse=*/false);
}

// The operators' overloads: plain RoPE, and MRoPE (yarn_ext::rotate.mrope).
using Overloads = detail::RotationOverloads<&rotate_cuda_any, &rotate_inplace_cuda_any>;

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(yarn_ext, CUDA, m) {
  m.impl("rotate", TORCH_BOX(&Overloads::rotate));
  m.impl("rotate_inplace", TORCH_BOX(&Overloads::rotate_inplace));
  m.impl("rotate.mrope", TORCH_BOX(&Overloads::rotate_mrope));
  m.impl("rotate_inplace.mrope", TORCH_BOX(&Overloads::rotate_inplace_mrope));
}

}  // namespace yarn_ext::cuda

// The launcher's path switch (rotate_args.h), for benchmarks/rotation.py, which measures the
// generic path with the token path off (through ctypes: yarn_ext._native.set_cuda_token_path).
// Returns the previous setting.
extern "C" YARN_EXT_API int yarn_ext_set_cuda_token_path(int enabled) {
  return yarn_ext::detail::set_cuda_token_path(enabled != 0) ? 1 : 0;
}

// Referenced by the C++ API's headers (yarn_ext/library_anchor.h) where the build has CUDA.
extern "C" YARN_EXT_API int yarn_ext_cuda_library_anchor() {
  return 0;
}

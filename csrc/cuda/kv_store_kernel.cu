// CUDA kernel of rotate_store_kv (QK-RMSNorm, rotation and the paged KV-cache write in one
// pass): kv_store::kLanes threads per row of a token - a head of q, k or v - whose work is
// kv_store_work.h, shared with the CPU emulation the tests run. Everything but slot_mapping's
// values is validated on the host before the launch (kv_store_plan.h), so a failing call changes
// nothing; the slots are read on the device only (no host synchronization, so the call can be
// captured in a CUDA graph): a slot outside the caches is skipped, and counted into invalid_slots
// when the caller passes that counter. benchmarks/sass.py reports what the kernel compiles to.
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <cstdint>

#include "cuda/launch.h"
#include "kv_store_plan.h"
#include "kv_store_work.h"

namespace yarn_ext::cuda {
namespace {

// At least 3 blocks (768 threads) per SM: 80 registers. At 4 blocks (64 registers, the
// rotation's token path) several of the common path's loops reloaded a spilled value every
// iteration (benchmarks/sass.py).
constexpr int kMinBlocksPerSm = 3;

template <typename scalar_t, int kVec, bool interleaved>
__global__ void __launch_bounds__(kv_store::kThreads, kMinBlocksPerSm)
    rotate_store_kv_kernel(const __grid_constant__ KvStoreLayout layout) {
  kv_store::rotate_store_thread<scalar_t, kVec, interleaved>(layout);
}

template <typename scalar_t, int kVec>
void launch(const KvStoreLayout& layout, const kv_store::KvStoreLaunch& geometry) {
  const dim3 grid(static_cast<unsigned>(geometry.grid_x), static_cast<unsigned>(geometry.grid_y));
  const dim3 block(static_cast<unsigned>(geometry.block_x),
                   static_cast<unsigned>(geometry.block_y));
  const cudaStream_t stream = current_stream();
  if (layout.interleaved) {
    rotate_store_kv_kernel<scalar_t, kVec, true><<<grid, block, 0, stream>>>(layout);
  } else {
    rotate_store_kv_kernel<scalar_t, kVec, false><<<grid, block, 0, stream>>>(layout);
  }
  STD_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_typed(const detail::KvStorePlan& plan, const kv_store::KvStoreLaunch& geometry) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  if (detail::kv_store_vector_width(plan) == kVec) return launch<scalar_t, kVec>(plan, geometry);
  launch<scalar_t, 1>(plan, geometry);
}

void run_cuda(const detail::KvStorePlan& plan) {
  const kv_store::KvStoreLaunch geometry = kv_store::kv_store_launch(plan);
  if (geometry.grid_x == 0) return;  // no tokens, or no heads
  YARN_CHECK(geometry.fits_cuda_grid(), "yarn_ext.rotate_store_kv", "too many tokens (",
             plan.num_tokens, ") or heads (", kv_store::rows_per_token(plan),
             " in q, k and v) for one launch");
  const torch::stable::accelerator::DeviceGuard guard(plan.device_index);
  switch (plan.dtype) {
    case detail::Dtype::kFloat16:
      return launch_typed<c10::Half>(plan, geometry);
    case detail::Dtype::kBFloat16:
      return launch_typed<c10::BFloat16>(plan, geometry);
    default:  // float32, the only other type the plan lets through
      return launch_typed<float>(plan, geometry);
  }
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(yarn_ext, CUDA, m) {
  m.impl("rotate_store_kv", TORCH_BOX((&detail::rotate_store_kv_entry<void, &run_cuda>)));
}

}  // namespace yarn_ext::cuda
